"""Sample written by the trainer → visible on the open run page: p50/p95/max, and bytes and requests per
sample.

    .venv/bin/python bench/bench_sample_latency.py [--runs 3] [--steps 300] [--sample-every 50]

Real time on the live stack, as bench_orchestration_completion.py builds it: Postgres (scratch database
`bench_samples`, dropped at the end), a real Celery worker with its beat on Redis, gunicorn serving the
studio, and the local RunPod stand-in running the unmodified worker with the simulated trainer, which
writes AI Toolkit's sample files (`samples/<ms>__<step:09d>_<i>.jpg`, moved into place atomically). Each
run has 3 sample prompts and trains `--steps` steps, rendering samples every `--sample-every` steps (and at
step 0 and at the end, as AI Toolkit does).

Written = when a watcher beside the trainer first sees the file in its samples folder (the trainer runs
behind a wrapper, AI_TOOLKIT_PYTHON, whose thread lists that folder every 20 ms). Visible = when headless
Chromium, showing the run page from before the job starts, has the sample's thumbnail in the gallery and
loaded (a MutationObserver in the page reports it with the browser's clock; both clocks are this machine's).
The page is the studio's own: it polls the progress JSON every 2 s and fetches the gallery part when its
version changes. Requests and bytes are what the page fetched over the network from opening until a moment
after the run ended (and the page reloaded itself), as Chrome counts them (DevTools protocol: responses
from its cache left out, bytes on the wire with headers), split by what they were for.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_orchestration_completion as stack_parts  # noqa: E402

from tests.support.celery_worker import CeleryWorker  # noqa: E402
from tests.support.local_runpod import LocalRunPod  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PROMPTS = [
    "[trigger], a close-up portrait photo, soft window light",
    "[trigger], three-quarter view, walking down a city street",
    "[trigger], full-body shot, standing on a beach",
]
TARGET_P95_S = 5.0
VERBOSE = "--verbose" in sys.argv
WRAPPER = """#!{python}
# Runs the trainer; a thread notes when each sample file first appears (bench_sample_latency.py).
import json, os, re, subprocess, sys, threading, time
from pathlib import Path
config = json.load(open(sys.argv[-1]))["config"]
process = config["process"][0]
samples = Path(process["training_folder"]) / config["name"] / "samples"
name = re.compile(r"^\\d+__(\\d+)_(\\d+)\\.(jpg|png|webp)$")
stop = threading.Event()
def watch():
    seen = set()
    with open(os.environ["BENCH_SAMPLE_LOG"], "a") as log:
        while not stop.is_set():
            now = time.time()
            try:
                files = os.listdir(samples)
            except FileNotFoundError:
                files = []
            for file in files:
                found = name.match(file)
                if found and file not in seen:
                    seen.add(file)
                    log.write(f"{{now}} {{config['name']}} {{int(found.group(1))}} {{found.group(2)}}\\n")
                    log.flush()
            stop.wait(0.02)
thread = threading.Thread(target=watch, daemon=True)
thread.start()
code = subprocess.call([{python!r}, *sys.argv[1:]])
time.sleep(0.1)
stop.set()
thread.join()
sys.exit(code)
"""
# In the page: report each gallery thumbnail once it is in the document and loaded, by its id.
OBSERVER = """
(() => {
  const seen = new Set();
  function check(link) {
    if (!link.id || seen.has(link.id)) return;
    const image = link.querySelector("img");
    if (!image) return;
    const report = () => {
      if (!seen.has(link.id)) { seen.add(link.id); window.benchSampleVisible(link.id, Date.now()); }
    };
    if (image.complete && image.naturalWidth > 0) report();
    else image.addEventListener("load", report, { once: true });
  }
  function scan() { document.querySelectorAll("a.sample").forEach(check); }
  new MutationObserver(scan).observe(document, { childList: true, subtree: true });
  document.addEventListener("DOMContentLoaded", scan);
})();
"""


@dataclass
class Traffic:
    """What the page fetched over the network (Chrome's own account through the DevTools protocol):
    requests answered from the browser's cache are not counted, and bytes are what crossed the wire,
    headers included."""

    requests: Counter[str] = field(default_factory=Counter)
    bytes: Counter[str] = field(default_factory=Counter)
    urls: dict[str, str] = field(default_factory=dict)
    cached: set[str] = field(default_factory=set)

    def listen(self, cdp: Any) -> None:
        cdp.send("Network.enable")
        cdp.on(
            "Network.requestWillBeSent",
            lambda event: self.urls.update({event["requestId"]: event["request"]["url"]}),
        )
        cdp.on("Network.requestServedFromCache", lambda event: self.cached.add(event["requestId"]))
        cdp.on("Network.responseReceived", self._response)
        cdp.on("Network.loadingFinished", self._finished)

    def _response(self, event: dict[str, Any]) -> None:
        if event["response"].get("fromDiskCache") or event["response"].get("fromPrefetchCache"):
            self.cached.add(event["requestId"])

    def _finished(self, event: dict[str, Any]) -> None:
        url = self.urls.get(event["requestId"], "")
        if not url or event["requestId"] in self.cached:
            return
        kind = kind_of(url)
        self.requests[kind] += 1
        self.bytes[kind] += int(event.get("encodedDataLength") or 0)


def kind_of(url: str) -> str:
    if "/progress.json" in url:
        return "progress JSON"
    if "/parts/gallery/" in url:
        return "gallery part"
    if "/parts/chart/" in url:
        return "chart part"
    if "/samples/" in url:
        return "thumbnails"
    return "page, styles, scripts"


@dataclass
class RunResult:
    latencies: list[float]
    samples: int
    traffic: Traffic
    missed: list[str]
    # Where the time went, per sample: written -> recorded by the callback (`Sample.created_at`) ->
    # verified in storage with thumbnails (`verified_at`) -> visible on the page.
    stages: dict[str, list[float]] = field(default_factory=dict)


def start_run(index: int, args: argparse.Namespace) -> Any:
    from training.services import training_run_start

    character = stack_parts.make_character(index)
    params = {
        "steps": args.steps,
        "rank": 4,
        "save_every": max(50, args.sample_every),
        "sample_every": args.sample_every,
        "sample_prompts": [prompt.replace("[trigger]", character.trigger_word) for prompt in PROMPTS],
    }
    return training_run_start(character=character, requested_by=character.owner, params=params, source="user")


def session_cookie(user: Any) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return str(client.cookies["sessionid"].value)


def watch_run(browser: Any, base: str, run: Any, sample_log: Path) -> RunResult:
    """Opens the run page before the job starts and keeps it open until the run has ended."""
    from training.models import TrainingRun

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "sessionid", "value": session_cookie(run.requested_by), "url": base}])
    page = context.new_page()
    visible: dict[str, float] = {}
    page.expose_function("benchSampleVisible", lambda ident, at: visible.setdefault(ident, at / 1000))
    page.add_init_script(OBSERVER)
    traffic = Traffic()
    traffic.listen(context.new_cdp_session(page))
    page.goto(f"{base}/runs/{run.pk}/")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        page.wait_for_timeout(250)
        run.refresh_from_db()
        if run.is_final:
            break
    page.wait_for_timeout(3000)  # the reload a finished run makes, and its thumbnails
    context.close()
    if run.status != TrainingRun.Status.COMPLETED:
        raise RuntimeError(f"run ended {run.status}: {run.error_message}")
    written = samples_written(sample_log, f"{run.character.trigger_word}_{run.id.hex[:8]}")
    rows = {(s.step, s.prompt_index): s for s in run.samples.all()}
    latencies, missed = [], []
    stages: dict[str, list[float]] = {
        "written -> recorded": [],
        "recorded -> verified": [],
        "verified -> visible": [],
    }
    for (step, index), at in sorted(written.items()):
        shown = visible.get(f"sample-{step}-{index}")
        if shown is None:
            missed.append(f"{step}/{index}")
            continue
        latencies.append(shown - at)
        row = rows.get((step, index))
        if row is not None and row.verified_at is not None:
            recorded, verified = row.created_at.timestamp(), row.verified_at.timestamp()
            stages["written -> recorded"].append(recorded - at)
            stages["recorded -> verified"].append(verified - recorded)
            stages["verified -> visible"].append(shown - verified)
            if VERBOSE:
                print(
                    f"    sample {step:>4}/{index}: recorded +{recorded - at:.2f} s, verified "
                    f"+{verified - at:.2f} s, visible +{shown - at:.2f} s"
                )
    return RunResult(latencies=latencies, samples=len(written), traffic=traffic, missed=missed, stages=stages)


def samples_written(sample_log: Path, name: str) -> dict[tuple[int, int], float]:
    """When each (step, prompt) sample of one job first appeared; a resumed job's rendering counts once."""
    written: dict[tuple[int, int], float] = {}
    for line in sample_log.read_text().splitlines():
        at, job_name, step, index = line.split()
        if job_name == name:
            written.setdefault((int(step), int(index)), float(at))
    return written


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def report(results: list[RunResult], args: argparse.Namespace, wall: float) -> None:
    latencies = [value for result in results for value in result.latencies]
    samples = sum(result.samples for result in results)
    missed = [item for result in results for item in result.missed]
    traffic = Traffic()
    for result in results:
        traffic.requests.update(result.traffic.requests)
        traffic.bytes.update(result.traffic.bytes)
    print("sample written by the trainer -> visible (thumbnail loaded) on the open run page")
    print(
        f"Method: REAL TIME, live stack; {len(results)} runs of {args.steps} steps at "
        f"{args.seconds_per_step} s, 3 prompts, samples every {args.sample_every} steps; "
        f"{samples} samples written, {len(latencies)} seen on the page, {len(missed)} never: {missed}"
    )
    if latencies:
        p95 = percentile(latencies, 0.95)
        print(
            f"  latency: median {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, "
            f"max {max(latencies):.2f} s, min {min(latencies):.2f} s (n={len(latencies)})"
        )
        print(f"  target: p95 <= {TARGET_P95_S:g} s -> {'met' if p95 <= TARGET_P95_S else 'NOT met'}")
        for stage in results[0].stages:
            values = [value for result in results for value in result.stages[stage]]
            if values:
                print(
                    f"    {stage:<22} median {statistics.median(values):.2f} s, "
                    f"p95 {percentile(values, 0.95):.2f} s, max {max(values):.2f} s"
                )
    total_requests, total_bytes = sum(traffic.requests.values()), sum(traffic.bytes.values())
    print(f"  per sample: {total_requests / samples:.1f} requests, {total_bytes / samples / 1024:.1f} KiB")
    for kind in sorted(traffic.requests, key=lambda k: -traffic.bytes[k]):
        print(
            f"    {kind:<22} {traffic.requests[kind]:5d} requests {traffic.bytes[kind] / 1024:9.1f} KiB  "
            f"= {traffic.requests[kind] / samples:5.2f} req, {traffic.bytes[kind] / samples / 1024:6.1f} "
            "KiB per sample"
        )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"bench wall time {wall:.1f} s; load average at the end {load} on {os.cpu_count()} cores")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--seconds-per-step", type=float, default=0.1)
    parser.add_argument("--verbose", action="store_true", help="each sample's times")
    args = parser.parse_args()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-samples-"))
    sample_log = workdir / "samples-written.log"
    sample_log.touch()
    wrapper = workdir / "sample-watching-python"
    wrapper.write_text(WRAPPER.format(python=sys.executable))
    wrapper.chmod(0o755)
    stack_parts.BENCH_DB = "bench_samples"
    database_url = stack_parts.database("create")
    runpod = LocalRunPod(
        workdir=workdir / "runpod",
        workers=1,
        env={
            "SIMULATED_TRAINER_SECONDS_PER_STEP": str(args.seconds_per_step),
            "AI_TOOLKIT_PYTHON": str(wrapper),
            "BENCH_SAMPLE_LOG": str(sample_log),
        },
    )
    web: Any = None
    worker: CeleryWorker | None = None
    results: list[RunResult] = []
    try:
        runpod.start()
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": stack_parts.REDIS_BASE.rsplit("/", 1)[0] + "/13",
            "CELERY_TASK_DEFAULT_QUEUE": f"bench-samples-{os.getpid()}",
            "DJANGO_DEBUG": "true",
            "MEDIA_ROOT": str(workdir / "media"),
            "RUNPOD_API_BASE": f"{runpod.base_url}/v2",
            "RUNPOD_ENDPOINT_ID": runpod.endpoint_id,
            "RUNPOD_API_KEY": runpod.api_key,
            "TRAINING_MIN_IMAGES": "3",
        }
        os.environ.update(env)
        os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)
        os.environ["DJANGO_SETTINGS_MODULE"] = "studio.settings"
        os.environ["STUDIO_VAR_DIR"] = str(workdir / "var")
        # Playwright's sync API keeps an event loop in this thread; the ORM calls here are synchronous.
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
        web = stack_parts.Gunicorn({**env, "STUDIO_VAR_DIR": str(workdir / "var")}, workdir)
        env["STUDIO_PUBLIC_URL"] = os.environ["STUDIO_PUBLIC_URL"] = web.url
        import django
        from django.core.management import call_command
        from playwright.sync_api import sync_playwright

        django.setup()
        call_command("migrate", verbosity=0)
        worker = CeleryWorker(env=env, workdir=workdir / "celery")
        worker.start()
        launch_args = ["--no-sandbox"] if os.geteuid() == 0 else []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=launch_args)
            for index in range(1, args.runs + 1):
                run = start_run(index, args)
                results.append(watch_run(browser, web.url, run, sample_log))
                result = results[-1]
                worst = f"{max(result.latencies):.2f}" if result.latencies else "-"
                print(f"  run {index}: {len(result.latencies)}/{result.samples} samples, worst {worst} s")
            browser.close()
    finally:
        if worker is not None:
            worker.stop()
        if web is not None:
            web.stop()
        runpod.stop()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        stack_parts.database("drop")
    report(results, args, time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
