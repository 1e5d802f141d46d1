"""What AI Toolkit prints before a job's process runs, whatever the job: run.py's job count
(run.py:115 at 27a03a91), the config, BaseJob.run's banner (jobs/BaseJob.py:33-37) and the extension job's
process count after a blank line (jobs/ExtensionJob.py:18-19), as in the captured real run
(tests/runpod_worker/fixtures/ai_toolkit/trains_with_checkpoints_and_samples.txt)."""

from __future__ import annotations

import json
from typing import Any


def print_job_banner(config: dict[str, Any]) -> None:
    print("Running 1 job")
    print(json.dumps(config["config"]["process"][0], indent=4))
    print("")
    print("#############################################")
    print(f"# Running job: {config['config']['name']}")
    print("#############################################")
    print("")
    print("")
    print("Running  1 process")
