"""py-cpuinfo as the local RunPod's workers see it: the one call the runpod SDK makes, answered from
/proc/cpuinfo.

The SDK names the processor at import, for its debugger's output only (runpod 1.12.0,
`serverless/utils/rp_debugger.py:19-22`: `cpuinfo.get_cpu_info()["brand_raw"]`, KeyError caught). py-cpuinfo
9.0.0 answers that by starting a second Python process (`cpuinfo.py:2719-2749`, `get_cpu_info_json`), which
then runs CPUID in a third: about 1.2 s of CPU at every worker start, more than the rest of the SDK's
import. The stand-in starts workers by the hundred in the test suite, so its workers find this module first
on their path (`workers.worker_env`). On RunPod, and in the image, py-cpuinfo itself answers.

Only the worker process: once imported, this module takes its folder off the PYTHONPATH the worker hands
its children, so the trainer (AI Toolkit's `run.py`, started with the worker's environment) and whatever
it imports get py-cpuinfo itself.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
os.environ["PYTHONPATH"] = os.pathsep.join(
    entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry and entry != _HERE
)


def get_cpu_info() -> dict[str, str]:
    """{"brand_raw": the processor's model name}, or {} where /proc/cpuinfo does not say (as py-cpuinfo's
    answer may lack the key; the SDK then reports "Unable to get processor info.")."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return {"brand_raw": value.strip()}
    return {}
