"""A stand-in for AI Toolkit's run.py: same command line, output, files and exit codes; no GPU, no torch.

It trains nothing. It exists so the worker, the local RunPod stand-in and the backend can be run and
tested end to end on a laptop or CI. Environment switches:

- SIMULATED_TRAINER_SECONDS_PER_STEP (default 0.01): speed.
- SIMULATED_TRAINER_FAIL=crash|oom|no_output: crash with a traceback, fail like AI Toolkit after
  repeated CUDA OOMs, or exit 0 without writing the final file.
- SIMULATED_TRAINER_FAIL_AT_STEP (default: half way): the step the failure happens at.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ui_progress  # the web UI's progress rows, written only for a `diffusion_trainer` the UI started
from safetensors.numpy import save_file

VERSION_FILE = Path(__file__).with_name("version.py")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
HIDDEN = 3072  # FLUX.1 transformer width
MLP = 12288
DOUBLE_BLOCKS = 19
SINGLE_BLOCKS = 38
# An 8x8 grey JPEG: sample images are real JPEG files, only tiny.
SAMPLE_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1R"
    "V19iZ2hnPk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2NjY2NjY2NjY2NjY2P/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAA"
    "AgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6"
    "Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXG"
    "x8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREA"
    "AgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5"
    "OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPE"
    "xcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwAooooA/9k="
)


def flux_lora_shapes(rank: int) -> dict[str, tuple[int, int]]:
    """PEFT-format tensor names and shapes of an AI Toolkit FLUX.1 LoRA at this rank."""
    double = {
        "attn.to_q": (HIDDEN, HIDDEN),
        "attn.to_k": (HIDDEN, HIDDEN),
        "attn.to_v": (HIDDEN, HIDDEN),
        "attn.to_out.0": (HIDDEN, HIDDEN),
        "attn.add_q_proj": (HIDDEN, HIDDEN),
        "attn.add_k_proj": (HIDDEN, HIDDEN),
        "attn.add_v_proj": (HIDDEN, HIDDEN),
        "attn.to_add_out": (HIDDEN, HIDDEN),
        "ff.net.0.proj": (HIDDEN, MLP),
        "ff.net.2": (MLP, HIDDEN),
        "ff_context.net.0.proj": (HIDDEN, MLP),
        "ff_context.net.2": (MLP, HIDDEN),
        "norm1.linear": (HIDDEN, 6 * HIDDEN),
        "norm1_context.linear": (HIDDEN, 6 * HIDDEN),
    }
    single = {
        "attn.to_q": (HIDDEN, HIDDEN),
        "attn.to_k": (HIDDEN, HIDDEN),
        "attn.to_v": (HIDDEN, HIDDEN),
        "proj_mlp": (HIDDEN, MLP),
        "proj_out": (HIDDEN + MLP, HIDDEN),
        "norm.linear": (HIDDEN, 3 * HIDDEN),
    }
    shapes: dict[str, tuple[int, int]] = {}
    for prefix, count, modules in (
        ("transformer.transformer_blocks", DOUBLE_BLOCKS, double),
        ("transformer.single_transformer_blocks", SINGLE_BLOCKS, single),
    ):
        for block in range(count):
            for module, (fan_in, fan_out) in modules.items():
                shapes[f"{prefix}.{block}.{module}.lora_A.weight"] = (rank, fan_in)
                shapes[f"{prefix}.{block}.{module}.lora_B.weight"] = (fan_out, rank)
    return shapes


def save_lora(path: Path, rank: int, step: int, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed + step)
    tensors = {}
    for key, shape in flux_lora_shapes(rank).items():
        if key.endswith("lora_A.weight"):
            tensors[key] = (rng.standard_normal(shape, dtype=np.float32) * 0.01).astype(np.float16)
        else:
            tensors[key] = np.full(shape, 1e-4 * step, dtype=np.float16)
    metadata = {
        "training_info": json.dumps({"step": step, "epoch": 0}),
        "ss_output_name": name,
        "ss_base_model_version": "flux1",
        "format": "pt",
        "simulated": "true",
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def fmt_clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def bar_line(name: str, n: int, total: int, elapsed: float, lr: float, loss: float | None) -> str:
    """One tqdm redraw as ToolkitProgressBar prints it without a TTY (10-character bar)."""
    pct = int(100 * n / total)
    filled = int(10 * n / total)
    bar = "\u2588" * filled + " " * (10 - filled)
    if n == 0 or elapsed <= 0:
        return f"{name}: {pct:3d}%|{bar}| {n}/{total} [00:00<?, ?it/s]"
    rate = n / elapsed
    rate_text = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
    remaining = fmt_clock((total - n) / rate)
    postfix = f"lr: {lr:.1e}" + (f" loss: {loss:.3e}" if loss is not None else "")
    return f"{name}: {pct:3d}%|{bar}| {n}/{total} [{fmt_clock(elapsed)}<{remaining}, {rate_text}, {postfix}]"


def load_config(arg: str) -> dict[str, Any]:
    path = Path(arg)
    if not path.exists():
        path = Path(__file__).parent / "config" / arg
    return json.loads(path.read_text(encoding="utf-8"))


def find_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.parts)
    )


class Stopped(Exception):
    pass


def on_sigint(_signum: int, _frame: Any) -> None:
    raise Stopped()


def train(config: dict[str, Any]) -> None:
    name = config["config"]["name"]
    process = config["config"]["process"][0]
    print("Running 1 job")
    print(json.dumps(process, indent=4))
    print("#############################################")
    print(f"# Running job: {name}")
    print("#############################################")
    print("Running  1 process")
    total = int(process["train"]["steps"])
    rank = int(process["network"]["linear"])
    save_every = int(process["save"]["save_every"])
    keep = int(process["save"]["max_step_saves_to_keep"])
    lr = float(process["train"]["lr"])
    out = Path(process["training_folder"]) / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(json.dumps(config, indent=2), encoding="utf-8")
    ui_progress.start(process, out).model_loading(quantize=bool(process["model"].get("quantize")))
    print("Loading Flux model")
    print("Loading transformer")
    if process["model"].get("quantize"):
        print("Quantizing transformer")
    print(f"create LoRA network. base dim (rank): {rank}, alpha: {process['network']['linear_alpha']}")
    ui_progress.hook.dataset_loading()
    for dataset in process["datasets"]:
        folder = Path(dataset["folder_path"])
        images = find_images(folder)
        print(f"Dataset: {folder}")
        print("  -  Preprocessing image dimensions")
        assert images, f"no images found in {folder}"
        print(f"  -  Found {len(images)} images")
    sampling = not process["train"].get("disable_sampling", False) and process["sample"]["prompts"]
    if process["train"].get("skip_first_sample"):
        print("Skipping first sample due to config setting")
    run_loop(name, process, out, total, rank, save_every, keep, lr, bool(sampling))
    ui_progress.hook.done()


def run_loop(
    name: str,
    process: dict[str, Any],
    out: Path,
    total: int,
    rank: int,
    save_every: int,
    keep: int,
    lr: float,
    sampling: bool,
) -> None:
    seconds_per_step = float(os.environ.get("SIMULATED_TRAINER_SECONDS_PER_STEP", "0.01"))
    failure = os.environ.get("SIMULATED_TRAINER_FAIL", "")
    fail_at = int(os.environ.get("SIMULATED_TRAINER_FAIL_AT_STEP", str(max(1, total // 2))))
    seed = int(os.environ.get("SEED", "42"))
    sample_every = int(process["sample"]["sample_every"])
    started = time.monotonic()
    ui_progress.hook.training(start_step=0)
    sys.stderr.write(bar_line(name, 0, total, 0, lr, None) + "\r")
    sys.stderr.flush()
    for step in range(1, total + 1):
        time.sleep(seconds_per_step)
        if failure in ("crash", "oom") and step >= fail_at:
            fail(failure, step)
        loss = 0.5 * (0.995**step) + 0.05
        sys.stderr.write(bar_line(name, step, total, time.monotonic() - started, lr, loss) + "\r")
        sys.stderr.flush()
        ui_progress.hook.step_end(step, loss=loss, lr=lr)
        if step % save_every == 0 and step != total:
            save_checkpoint(out, name, rank, step, keep, seed)
        if sampling and step % sample_every == 0 and step != total:
            write_samples(out, step, len(process["sample"]["prompts"]))
    sys.stderr.write("\n")
    if failure == "no_output":
        return
    ui_progress.hook.saving(total)
    save_lora(out / f"{name}.safetensors", rank, total, name, seed)
    ui_progress.hook.back_to_training()
    if sampling:
        write_samples(out, total, len(process["sample"]["prompts"]))


def fail(kind: str, step: int) -> None:
    if kind == "oom":
        for attempt in range(1, 4):
            print(f"# OOM during training step, skipping batch {attempt}/3 #")
        raise RuntimeError("OOM during training step 3 times in a row, aborting training")
    raise ValueError(f"simulated crash at step {step}")


def save_checkpoint(out: Path, name: str, rank: int, step: int, keep: int, seed: int) -> None:
    print(f"\nSaving at step {step}")
    ui_progress.hook.saving(step)
    path = out / f"{name}_{step:09d}.safetensors"
    save_lora(path, rank, step, name, seed)
    print(f"Saved checkpoint to {path}")
    (out / "optimizer.pt").write_bytes(b"simulated optimizer state")
    print(f"Saved optimizer to {out / 'optimizer.pt'}")
    saves = sorted(out.glob(f"{name}_*.safetensors"), key=lambda p: p.stat().st_mtime)
    for old in saves[:-keep] if keep > 0 else []:
        print(f"Removing old save: {old}")
        old.unlink()
    ui_progress.hook.back_to_training()


def write_samples(out: Path, step: int, count: int) -> None:
    samples = out / "samples"
    samples.mkdir(exist_ok=True)
    stamp = int(time.time() * 1000)
    for index in range(count):
        ui_progress.hook.sampling(index, count)
        (samples / f"{stamp}__{step:09d}_{index}.jpg").write_bytes(SAMPLE_JPEG)
    ui_progress.hook.sampling(count, count)
    ui_progress.hook.back_to_training()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config_file_list", nargs="+")
    parser.add_argument("-r", "--recover", action="store_true")
    parser.add_argument("-n", "--name", default=None)
    parser.add_argument("-l", "--log", default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, on_sigint)
    failures = 0
    for arg in args.config_file_list:
        try:
            train(load_config(arg))
        except Stopped:
            ui_progress.hook.on_error(KeyboardInterrupt())
            banner = "=" * 40
            print(f"{banner}\nJob stopped\n{banner}")
            return 0
        except Exception as exc:
            ui_progress.hook.on_error(exc)
            failures += 1
            print(f"Error running job: {exc}")
            print("========================================\nResult:")
            print(f" - {len(args.config_file_list) - failures} completed jobs\n - {failures} failure")
            print("========================================")
            if not args.recover:
                raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
