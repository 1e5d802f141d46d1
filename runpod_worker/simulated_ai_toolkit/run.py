"""A stand-in for AI Toolkit's run.py: same command line, output, files and exit codes; no GPU, no torch.

What it prints and writes follows a real run of AI Toolkit 27a03a91 on a tiny FLUX.1
(tests/runpod_worker/fixtures/ai_toolkit/trains_with_checkpoints_and_samples.txt, and its `output_files`
in fixtures.json); tests/runpod_worker/test_simulator_fidelity.py holds the two side by side.

It trains nothing. It exists so the worker, the local RunPod stand-in and the backend can be run and
tested end to end on a laptop or CI. Environment switches:

- SIMULATED_TRAINER_SECONDS_PER_STEP (default 0.01): speed.
- SIMULATED_TRAINER_FAIL=crash|oom|no_output: crash with a traceback, fail like AI Toolkit after
  repeated CUDA OOMs, or exit 0 without writing the final file.
- SIMULATED_TRAINER_FAIL_AT_STEP (default: half way): the step the failure happens at.
- SIMULATED_TRAINER_LORA_BLOCKS (default: every block, as AI Toolkit saves them): only the first N
  transformer blocks of each kind go into the LoRA files, at their real names and shapes. The test suite
  sets 2 where nothing depends on the LoRA's size: a FLUX.1 LoRA at rank 4 is then 3 MB instead of 43 MB,
  which every save writes, hashes, uploads and the studio downloads again to verify.

As AI Toolkit does (jobs/process/BaseSDTrainProcess.py at 27a03a91): it resumes from the newest save in
its save folder by ctime, at the step in that file's metadata (:823-889, :2048-2054), loading optimizer.pt
when present (:2189-2214); renders a baseline sample at step 0 unless `skip_first_sample` (:2477-2481);
saves `<name>_<step:09d>.safetensors` then optimizer.pt and samples `<ms>__<step:09d>_<i>.jpg` at every
multiple of save_every / sample_every except its start step (:2554-2560, :2706-2732), prunes saves past
`max_step_saves_to_keep` by ctime (:418-493); logs `loss/loss` into loss_log.db with
`logging.use_ui_logger` (toolkit/logging_aitk.py), then the final `<name>.safetensors` and samples.
Its sample images are the run's own training photos emerging from noise step by step, labelled
"simulated" (samples.py; 256 px, not the configured size, to stay fast). A `Qwen3VLCaptioner` extension job
(the captioner AI Toolkit ships) is simulated too: captioner.py.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import struct
import sys
import time
from pathlib import Path
from typing import Any

import captioner  # the `Qwen3VLCaptioner` extension job, simulated
import lora_shapes  # the LoRA files of each base model other than FLUX.1
import numpy as np
import samples
import ui_progress  # the web UI's progress rows, written only for a `diffusion_trainer` the UI started
import yaml
from job_banner import print_job_banner
from safetensors.numpy import save, save_file

VERSION_FILE = Path(__file__).with_name("version.py")
VERSION = VERSION_FILE.read_text(encoding="utf-8").split('"')[1]
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


def lora_metadata(config: dict[str, Any], step: int, epoch: int) -> dict[str, str]:
    """The LoRA's safetensors metadata as AI Toolkit writes it: the config's `meta` with `[name]` filled in,
    then training info (jobs/process/BaseSDTrainProcess.py `update_training_metadata`, `get_training_info`),
    the software block and `format` (toolkit/metadata.py `get_meta_for_safetensors`); non-strings as JSON."""
    name = config["config"]["name"]
    process = config["config"]["process"][0]
    meta: dict[str, Any] = json.loads(json.dumps(config.get("meta", {})).replace("[name]", name))
    meta["training_info"] = {"step": step, "epoch": epoch}
    # toolkit/stable_diffusion_model.py get_base_model_version; each model class its own (lora_shapes.py)
    arch = process["model"].get("arch", "flux")
    meta["ss_base_model_version"] = lora_shapes.ARCHES[arch][1] if arch in lora_shapes.ARCHES else "flux.1"
    meta["ss_output_name"] = name
    trigger = process.get("trigger_word")
    if trigger is not None:
        meta["ss_tag_frequency"] = {f"1_{trigger}": {trigger: 1}}
    meta["software"] = {"name": "ai-toolkit", "repo": "https://github.com/ostris/ai-toolkit",
                        "version": VERSION}  # fmt: skip
    meta["simulated"] = "true"
    flat = {key: value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()}
    flat["format"] = "pt"
    return flat


def first_blocks(shapes: dict[str, tuple[int, int]], count: int) -> dict[str, tuple[int, int]]:
    """The tensors of the first `count` blocks of each kind (`<prefix>.<block>.<module>...`)."""
    return {key: shape for key, shape in shapes.items() if int(key.split(".")[2]) < count}


def save_lora(path: Path, config: dict[str, Any], step: int, seed: int, epoch: int = 0) -> None:
    rank = int(config["config"]["process"][0]["network"]["linear"])
    arch = config["config"]["process"][0]["model"].get("arch", "flux")
    shapes = lora_shapes.ARCHES[arch][0](rank) if arch in lora_shapes.ARCHES else flux_lora_shapes(rank)
    blocks = os.environ.get("SIMULATED_TRAINER_LORA_BLOCKS")
    if blocks:
        shapes = first_blocks(shapes, int(blocks))
    for index, target in enumerate(lora_shapes.lora_files(path, config)):
        rng = np.random.default_rng(seed + step + index)
        tensors = {}
        for key, shape in shapes.items():
            if key.endswith("lora_A.weight"):
                tensors[key] = (rng.standard_normal(shape, dtype=np.float32) * 0.01).astype(np.float16)
            else:
                tensors[key] = np.full(shape, 1e-4 * step, dtype=np.float16)
        metadata = lora_metadata(config, step, epoch)
        metadata.update(model_hashes(tensors, metadata))
        tmp = target.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(target)


def model_hashes(tensors: dict[str, Any], metadata: dict[str, str]) -> dict[str, str]:
    """sd-webui-additional-networks' hashes over the file saved with the ss_ metadata only
    (toolkit/metadata.py add_model_hash_to_meta, toolkit/train_tools.py addnet_hash_*)."""
    data = save(
        {k: v for k, v in tensors.items()},
        metadata={k: v for k, v in metadata.items() if k.startswith("ss_")},
    )
    (length,) = struct.unpack("<Q", data[:8])
    return {
        "sshs_model_hash": hashlib.sha256(data[8 + length :]).hexdigest(),
        "sshs_legacy_hash": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
    }


def fmt_clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


# tqdm's Unicode bar: full blocks, one partial block of eighths, spaces (tqdm/std.py Bar.UTF).
BAR_CHARS = " " + "".join(map(chr, range(0x258F, 0x2587, -1)))


def bar_glyphs(n: int, total: int, width: int = 10) -> str:
    eighths = len(BAR_CHARS) - 1
    full, part = divmod(int(n / total * width * eighths), eighths)
    if full >= width:
        return BAR_CHARS[-1] * width
    return BAR_CHARS[-1] * full + BAR_CHARS[part] + BAR_CHARS[0] * (width - full - 1)


def bar_line(name: str, n: int, total: int, elapsed: float, lr: float, loss: float | None) -> str:
    """One tqdm redraw as ToolkitProgressBar prints it without a TTY (10-character bar). Before the first
    completed step the rate and time left are `?`, and the postfix follows once a loss is set."""
    head = f"{name}: {int(100 * n / total):3d}%|{bar_glyphs(n, total)}| {n}/{total}"
    postfix = "" if loss is None else f", lr: {lr:.1e} loss: {loss:.3e}"
    if n == 0 or elapsed <= 0:
        return f"{head} [{fmt_clock(max(elapsed, 0))}<?, ?it/s{postfix}]"
    rate = n / elapsed
    rate_text = f"{rate:5.2f}it/s" if rate >= 1 else f"{1 / rate:5.2f}s/it"
    return f"{head} [{fmt_clock(elapsed)}<{fmt_clock((total - n) / rate)}, {rate_text}{postfix}]"


def load_config(arg: str) -> dict[str, Any]:
    path = Path(arg)
    if not path.exists():
        path = Path(__file__).parent / "config" / arg
    config = json.loads(path.read_text(encoding="utf-8"))
    # toolkit/config.py get_config: `[name]` anywhere in the config becomes the job's name.
    return json.loads(json.dumps(config).replace("[name]", config["config"]["name"]))


def find_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.parts)
    )


def usable_images(folder: Path) -> list[Path]:
    """toolkit/data_loader.py: an image that fails to open is reported and left out; the run goes on."""
    from PIL import Image

    usable = []
    for path in find_images(folder):
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as exc:  # what AI Toolkit catches, too
            print(f"Error processing image: {path}")
            print(exc)
            continue
        usable.append(path)
    return usable


class Stopped(Exception):
    pass


def on_sigint(_signum: int, _frame: Any) -> None:
    raise Stopped()


def run_job(config: dict[str, Any]) -> None:
    """toolkit/job.py get_job: an `extension` job runs its processes by type; the captioner is the one
    extension simulated here, the trainer (`sd_trainer`) the other job."""
    if config["config"]["process"][0].get("type") == captioner.PROCESS_TYPE:
        captioner.run(config)
    else:
        train(config)


def train(config: dict[str, Any]) -> None:
    name = config["config"]["name"]
    process = config["config"]["process"][0]
    print_job_banner(config)
    out = Path(process["training_folder"]) / name
    out.mkdir(parents=True, exist_ok=True)
    # jobs/process/BaseTrainProcess.py save_training_config: the raw config as YAML.
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    ui_progress.start(process, out).model_loading(quantize=bool(process["model"].get("quantize")))
    print("Loading Flux model")
    print("Loading transformer")
    if process["model"].get("quantize"):
        print("Quantizing transformer")
    rank = int(process["network"]["linear"])
    # toolkit/lora_special.py: FLUX LoRAs are PEFT format, where alpha is the rank whatever is asked.
    print(f"create LoRA network. base dim (rank): {rank}, alpha: {rank}")
    ui_progress.hook.dataset_loading()
    for dataset in process["datasets"]:
        folder = Path(dataset["folder_path"])
        print(f"Dataset: {folder}")
        print("  -  Preprocessing image dimensions")
        images = usable_images(folder)
        print(f"  -  Found {len(images)} images")
        assert images, f"no images found in {folder}"
    photos = usable_images(Path(process["datasets"][0]["folder_path"]))
    loop = Loop(config, out, batches_per_epoch=max(1, len(images)), sample_sources=photos)
    loop.resume()
    loop.first_sample()
    loop.run()
    ui_progress.hook.done()


class Loop:
    """The training loop's output (jobs/process/BaseSDTrainProcess.py `run`): for each 0-based step, a
    redraw with the step's loss, the checkpoint and samples when the step is a multiple of save_every /
    sample_every (never step 0), then the redraw that counts it done. The final LoRA and samples follow."""

    def __init__(
        self, config: dict[str, Any], out: Path, *, batches_per_epoch: int, sample_sources: list[Path]
    ) -> None:
        self.config, self.out = config, out
        self.sample_sources = sample_sources
        self.start_step = 0
        self.batches_per_epoch = batches_per_epoch
        self.name = config["config"]["name"]
        process = config["config"]["process"][0]
        self.total = int(process["train"]["steps"])
        self.save_every = int(process["save"]["save_every"])
        self.keep = int(process["save"]["max_step_saves_to_keep"])
        self.lr = float(process["train"]["lr"])
        self.sample_config = process["sample"]
        self.sample_every = int(process["sample"]["sample_every"])
        prompts = process["sample"]["prompts"]
        self.prompts = len(prompts) if not process["train"].get("disable_sampling", False) else 0
        self.seed = int(os.environ.get("SEED", "42"))
        self.started = time.monotonic()
        self.train_config = process["train"]
        logging = process.get("logging") or {}
        # create_logger (toolkit/logging_aitk.py:329-344): the UI logger only when asked for.
        self.loss_log = ui_progress.LossLog(out / "loss_log.db") if logging.get("use_ui_logger") else None
        self.log_every = logging.get("log_every", 100)  # LoggingConfig default (config_modules.py:37)

    def resume(self) -> None:
        """get_latest_save_path + load_training_state_from_metadata (BaseSDTrainProcess.py:823-889)."""
        latest = latest_save(self.out, self.name)
        if latest is None:
            return
        print(f"#### IMPORTANT RESUMING FROM {latest} ####")
        print(f"Loading from {latest}")
        info = read_training_info(latest)
        if info is not None and "step" in info and self.train_config.get("start_step") is None:
            self.start_step = int(info["step"])
            print(f"Found step {self.start_step} in metadata, starting from there")
        if self.train_config.get("start_step") is not None:
            self.start_step = int(self.train_config["start_step"])  # :2172-2174
        optimizer = self.out / "optimizer.pt"
        if optimizer.exists():
            print(f"Loading optimizer state from {optimizer}")

    def first_sample(self) -> None:
        """BaseSDTrainProcess.py:2476-2481: the baseline sample, only when the run starts at step <= 1."""
        if self.train_config.get("skip_first_sample") or self.train_config.get("disable_sampling"):
            print("Skipping first sample due to config setting")
        elif self.start_step <= 1 or self.train_config.get("force_first_sample"):
            print("Generating baseline samples before training")
            if self.prompts:
                self.write_samples(self.start_step, nested=False)

    def write_samples(self, step: int, *, nested: bool) -> None:
        def image(index: int) -> bytes:
            seed = int(self.sample_config.get("seed", 42))
            return samples.sample_image(self.sample_sources, step, self.total, index, seed)

        write_samples(self.out, step, self.prompts, nested=nested, image=image)

    def bar(self, n: int, loss: float | None) -> None:
        sys.stderr.write(
            "\r" + bar_line(self.name, n, self.total, time.monotonic() - self.started, self.lr, loss)
        )
        sys.stderr.flush()

    def run(self) -> None:
        seconds_per_step = float(os.environ.get("SIMULATED_TRAINER_SECONDS_PER_STEP", "0.01"))
        failure = os.environ.get("SIMULATED_TRAINER_FAIL", "")
        fail_at = int(os.environ.get("SIMULATED_TRAINER_FAIL_AT_STEP", str(max(1, self.total // 2))))
        try:
            self._run(seconds_per_step, failure, fail_at)
        finally:
            if self.loss_log is not None:
                self.loss_log.finish()

    def _run(self, seconds_per_step: float, failure: str, fail_at: int) -> None:
        start = self.start_step
        sys.stderr.write("\n")
        # DiffusionTrainer.hook_before_train_loop: the start step and "Training" before the first bar.
        ui_progress.hook.training(start_step=start)
        self.bar(start, None)
        for step in range(start, self.total):
            time.sleep(seconds_per_step)
            if failure in ("crash", "oom") and step + 1 >= fail_at:
                fail(failure, step + 1)
            loss = 0.5 * (0.995 ** (step + 1)) + 0.05
            self.bar(step, loss)
            if step != start and step % self.save_every == 0:
                save_checkpoint(
                    self.config, self.out, step, self.keep, self.seed, step // self.batches_per_epoch
                )
            if step != start and self.prompts and step % self.sample_every == 0:
                self.write_samples(step, nested=True)
            # :2740-2794: logged at every log_every step but the start step, committed with the step.
            logs = self.log_every is None or (self.log_every and step % self.log_every == 0)
            if self.loss_log is not None and step != start and logs:
                self.loss_log.commit(step, {"learning_rate": self.lr, "loss/loss": loss})
            self.bar(step + 1, loss)
            # BaseSDTrainProcess.py:2815-2817: step_num = step + 1, then end_step_hook writes it.
            ui_progress.hook.step_end(step + 1, loss=loss, lr=self.lr)
        sys.stderr.write("\n")
        sys.stderr.flush()
        if failure == "no_output":
            return
        final = self.out / f"{self.name}.safetensors"
        ui_progress.hook.saving(self.total)
        save_lora(final, self.config, self.total, self.seed, epoch=self.total // self.batches_per_epoch)
        print(f"Saved checkpoint to {final}")
        (self.out / "optimizer.pt").write_bytes(b"simulated optimizer state")
        print(f"Saved optimizer to {self.out / 'optimizer.pt'}")
        ui_progress.hook.back_to_training()
        if self.prompts:
            self.write_samples(self.total, nested=False)


def latest_save(out: Path, name: str) -> Path | None:
    """get_latest_save_path (BaseSDTrainProcess.py:823-865): `<name>*.safetensors`, `<name>*.pt`,
    `<name>*`, without `_LoRA`/`_refiner`/`_t2i`/`_cn` names, the newest by ctime."""
    if not out.exists():
        return None
    paths = {p for pattern in (f"{name}*.safetensors", f"{name}*.pt", f"{name}*") for p in out.glob(pattern)}
    paths = {p for p in paths if not any(tag in p.name for tag in ("_LoRA", "_refiner", "_t2i", "_cn"))}
    return max(paths, key=lambda p: p.stat().st_ctime) if paths else None


def read_training_info(path: Path) -> dict[str, Any] | None:
    """`training_info` of a save's metadata, JSON-decoded as toolkit/metadata.py:71-88 does."""
    try:
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            metadata = json.loads(handle.read(length)).get("__metadata__") or {}
        info = json.loads(metadata["training_info"])
    except (OSError, ValueError, KeyError, struct.error):
        return None
    return info if isinstance(info, dict) else None


def fail(kind: str, step: int) -> None:
    if kind == "oom":
        # jobs/process/BaseSDTrainProcess.py:2633-2645: three skipped batches, the fourth OOM aborts.
        rule = "#" * 48
        for attempt in range(1, 4):
            print(f"\n{rule}\n# OOM during training step, skipping batch {attempt}/3 #\n{rule}\n")
        raise RuntimeError("OOM during training step 3 times in a row, aborting training")
    raise ValueError(f"simulated crash at step {step}")


def save_checkpoint(config: dict[str, Any], out: Path, step: int, keep: int, seed: int, epoch: int) -> None:
    name = config["config"]["name"]
    print(f"\nSaving at step {step}")
    ui_progress.hook.saving(step)
    path = out / f"{name}_{step:09d}.safetensors"
    save_lora(path, config, step, seed, epoch)
    print(f"Saved checkpoint to {path}")
    (out / "optimizer.pt").write_bytes(b"simulated optimizer state")
    print(f"Saved optimizer to {out / 'optimizer.pt'}")
    saves = sorted(out.glob(f"{name}_*.safetensors"), key=lambda p: p.stat().st_mtime)
    for old in saves[:-keep] if keep > 0 else []:
        print(f"Removing old save: {old}")
        old.unlink()
    ui_progress.hook.back_to_training()


def write_samples(out: Path, step: int, count: int, *, nested: bool, image: Any = None) -> None:
    """Samples as toolkit/config_modules.py save_image_atomic writes them: into samples/.tmp, a 300 px
    thumbnail moved to samples/.thumbs/<file>.jpg first, then the image into place; the "Generating Images"
    bar is nested under the training bar (cursor-up escapes) inside the loop, plain after it."""
    up = "\x1b[A\n" if nested else ""
    started = time.monotonic()
    sys.stderr.write(
        ("\n" if nested else "") + f"\rGenerating Images:   0%|          | 0/{count} [00:00<?, ?it/s]{up}"
    )
    samples, tmp, thumbs = out / "samples", out / "samples" / ".tmp", out / "samples" / ".thumbs"
    for folder in (tmp, thumbs):
        folder.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time() * 1000)
    for index in range(count):
        ui_progress.hook.sampling(index, count)
        # toolkit/config_modules.py:1229-1236 pads the index to the width of max_count, which the sampler
        # leaves at 0 (toolkit/models/base_model.py:711 `save_image_atomic(img, i)`): no padding.
        filename = f"{stamp}__{step:09d}_{index}.jpg"
        data = SAMPLE_JPEG if image is None else image(index)
        (tmp / filename).write_bytes(data)
        (thumbs / f"{filename}.jpg").write_bytes(data)
        (tmp / filename).replace(samples / filename)
    done = fmt_clock(time.monotonic() - started)
    sys.stderr.write(
        f"\rGenerating Images: 100%|{bar_glyphs(1, 1)}| {count}/{count} [{done}<00:00,  1.00it/s]{up}"
    )
    sys.stderr.write("\r" + " " * 64 + ("\x1b[A\n" if nested else "\r\n\n"))
    sys.stderr.flush()
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
            run_job(load_config(arg))
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
