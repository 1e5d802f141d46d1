"""The job contract shared by the backend and the GPU worker (stdlib only, versioned).

The backend builds `JobInput` for RunPod's `/run` and reads `JobOutput`, `Progress` and
`WorkerError` back from `/status`, webhooks and worker callbacks. The worker validates the same
`JobInput` before spending GPU time. Keep this module free of third-party imports: both images
import it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

CONTRACT_VERSION = 1


class BaseModel:
    """Base model presets. Wan 2.1 is reserved: it joins `SUPPORTED` once the worker trains it.

    `wan22` is Wan 2.2 T2V A14B, trained on still images; its two experts give two LoRA files
    (`LoraArtifact.name` is the high-noise one, `JobOutput.lora_low_noise` the other). `wan22-5b` is Wan 2.2
    TI2V 5B, one transformer and one LoRA file, also trained on still images."""

    FLUX_DEV = "flux-dev"
    FLUX_SCHNELL = "flux-schnell"
    WAN21 = "wan21"
    WAN22 = "wan22"
    WAN22_5B = "wan22-5b"
    QWEN_IMAGE = "qwen-image"
    Z_IMAGE = "z-image"
    SUPPORTED: tuple[str, ...] = (FLUX_DEV, FLUX_SCHNELL, QWEN_IMAGE, WAN22, WAN22_5B, Z_IMAGE)
    # Models whose AI Toolkit run writes one LoRA per expert (`<name>_high_noise` and `<name>_low_noise`).
    SPLIT: tuple[str, ...] = (WAN22,)
    # The smallest card, in GB as RunPod names its pools, each model trains on with its 24gb preset (the
    # quantisation AI Toolkit's own 24 GB examples and UI defaults use). The backend runs a model only on
    # pools this size or larger; the worker refuses a smaller card before it downloads anything.
    MIN_VRAM_GB: dict[str, int] = {
        FLUX_DEV: 24,
        FLUX_SCHNELL: 24,
        QWEN_IMAGE: 24,
        WAN22: 24,
        WAN22_5B: 24,
        Z_IMAGE: 24,
    }
    DEFAULT = FLUX_DEV


class GpuPreset:
    LOW_VRAM_24GB = "24gb"
    HIGH_VRAM_80GB = "80gb"
    ALL: tuple[str, ...] = (LOW_VRAM_24GB, HIGH_VRAM_80GB)


class Stage:
    DOWNLOADING = "downloading"
    TRAINING = "training"
    UPLOADING = "uploading"
    ALL: tuple[str, ...] = (DOWNLOADING, TRAINING, UPLOADING)


class ErrorCode:
    BAD_INPUT = "bad_input"
    DOWNLOAD_FAILED = "download_failed"
    OUT_OF_MEMORY = "out_of_memory"
    # The base model could not be had from the Hugging Face Hub: gated (licence not accepted, no or wrong
    # HF_TOKEN), not found, or the Hub unreachable. The message names HF_TOKEN and the licence page.
    MODEL_ACCESS = "model_access"
    TRAINER_FAILED = "trainer_failed"
    UPLOAD_FAILED = "upload_failed"
    CANCELLED = "cancelled"
    # Stopped because another delivery of the same job holds the run (a duplicate hand-out,
    # runpod-python#402): not the run's outcome, which the holder decides.
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    UNKNOWN = "unknown"
    ALL: tuple[str, ...] = (
        BAD_INPUT,
        DOWNLOAD_FAILED,
        OUT_OF_MEMORY,
        MODEL_ACCESS,
        TRAINER_FAILED,
        UPLOAD_FAILED,
        CANCELLED,
        CLAIMED_ELSEWHERE,
        UNKNOWN,
    )


# Worker -> backend callback protocol.
CALLBACK_EVENT_STARTED = "started"
CALLBACK_EVENT_PROGRESS = "progress"
# Additive: sent once by the delivery that trained, right after a successful upload and before the handler
# returns, with the JobOutput document in `output`; the backend completes the run from it whichever
# delivery's result RunPod keeps.
CALLBACK_EVENT_FINISHED = "finished"
CALLBACK_FIELD_OUTPUT = "output"
CALLBACK_ACTION_CONTINUE = "continue"
CALLBACK_ACTION_STOP = "stop"
# Additive (older workers never send a delivery id and are never told to wait): "wait" means another
# delivery of the same job holds the run and was heard from lately; ask "started" again after
# `retry_after_s`, sending how long this delivery has waited so far in `claim_wait_s`.
CALLBACK_ACTION_WAIT = "wait"
# Every callback of one handler invocation carries the same `delivery_id` (a uuid made when the job
# starts), so the backend can tell RunPod re-running a job after a lost worker from a duplicate hand-out.
CALLBACK_FIELD_DELIVERY_ID = "delivery_id"
CALLBACK_FIELD_CLAIM_WAIT_S = "claim_wait_s"
CALLBACK_FIELD_RETRY_AFTER_S = "retry_after_s"
# Additive: a "stop" answer may say why in `code`; `ErrorCode.CLAIMED_ELSEWHERE` means another delivery
# holds the run, and the worker ends with that code instead of `cancelled`.
CALLBACK_FIELD_CODE = "code"
CALLBACK_AUTH_SCHEME = "Bearer"
# Additive fields of a "progress" callback (see docs/TRAINING.md, "Samples, checkpoints, loss, resume").
# Each is present only when it has something new; an item is sent again in the next callback until a
# callback carrying it was answered HTTP 200, so the backend must treat them as upserts.
# - `checkpoints`: CheckpointArtifact documents, each uploaded and hashed, in step order.
# - `samples`: SampleArtifact documents, each uploaded and hashed.
# - `loss_series`: {"loss": [[step, value], ...], "val_loss": [[step, value], ...]} read from AI Toolkit's
#   loss_log.db (keys `loss/loss` and `val/loss`), the steps after those already acknowledged,
#   downsampled to at most LOSS_POINTS_PER_CALLBACK points per series (each point the mean of a run of
#   consecutive steps, at its last step).
# - `resumed_from_step`: on every progress callback of a delivery that resumed; the backend drops loss
#   points after that step (as AI Toolkit's own UILogger prunes them, toolkit/logging_aitk.py:158-162).
CALLBACK_FIELD_CHECKPOINTS = "checkpoints"
CALLBACK_FIELD_SAMPLES = "samples"
CALLBACK_FIELD_LOSS = "loss_series"
CALLBACK_FIELD_RESUMED_FROM_STEP = "resumed_from_step"
LOSS_POINTS_PER_CALLBACK = 100
# Additive: the answer to "started" may carry `resume`, a ResumeSpec document, when RunPod runs a job
# again after losing its worker (the job input cannot change then). It wins over the input's `resume`.
CALLBACK_FIELD_RESUME = "resume"

ALLOWED_RESOLUTIONS: tuple[int, ...] = (512, 768, 1024)
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp")
MAX_IMAGES = 200
MAX_SAMPLE_PROMPTS = 10

PARAM_DEFAULTS: dict[str, Any] = {
    "steps": 1500,
    "rank": 16,
    # AI Toolkit saves FLUX LoRAs in PEFT format, which has no alpha, and forces alpha = rank
    # (toolkit/lora_special.py:428-431 at 27a03a91): null means rank, and no other value is accepted.
    "alpha": None,
    "learning_rate": 1e-4,
    "resolutions": [512, 768, 1024],
    "batch_size": 1,
    "seed": None,
    "caption_dropout": 0.05,
    "save_every": 250,
    "sample_prompts": [],
    # 0 renders no samples. The studio's default is its save interval, so each checkpoint has its samples.
    "sample_every": 0,
    # The seed of every sample image. AI Toolkit's `walk_seed` is off, so all prompts and all steps use this
    # one seed (BaseSDTrainProcess.py:290-302 at 27a03a91): a column of the gallery compares like with like.
    # null: the run's `seed`, or 42 when that is null too.
    "sample_seed": None,
    # A baseline sample at step 0, before any training (BaseSDTrainProcess.py:2477-2480). Off by default:
    # it costs minutes of GPU time and shows the base model, not the character.
    "sample_first": False,
    # Additive: images sent without a caption are captioned on the worker before training, by the vision model
    # in `runpod_worker/captions.py`, with the trigger word first; the captions come back in the output
    # (`JobOutput.captions`). False trains such images on the bare trigger word ("a photo of <trigger>").
    "auto_caption": True,
}
# Bounds on the pre-signed upload targets of one job (see `OutputTarget`): at most 119 checkpoints follow
# from steps <= 6000 and save_every >= 50; samples are bounded here, since sample_every has no lower bound.
MAX_SAMPLE_UPLOADS = 2000

_SAFE_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
_TRIGGER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


class ContractError(ValueError):
    """A document does not follow the contract; `field` is a dotted path such as `images[3].sha256`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --------------------------------------------------------------------------- small validators


def _require_dict(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ContractError(path or "input", "must be a JSON object")
    return value


def _reject_unknown(data: dict[str, Any], allowed: set[str], path: str) -> None:
    # Unknown keys are refused so a typo in the backend fails loudly instead of training with defaults.
    for key in data:
        if key not in allowed:
            raise ContractError(_join(path, key), "is not a known field")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _int(data: dict[str, Any], key: str, path: str, lo: int | None = None, hi: int | None = None) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError(_join(path, key), "must be a whole number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ContractError(_join(path, key), f"must be between {lo} and {hi}" if hi else f"must be >= {lo}")
    return value


def _float(
    data: dict[str, Any], key: str, path: str, lo: float, hi: float, *, open_lo: bool = False
) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ContractError(_join(path, key), "must be a number")
    if (open_lo and value <= lo) or (not open_lo and value < lo) or value > hi:
        bound = f"greater than {lo}" if open_lo else f"at least {lo}"
        raise ContractError(_join(path, key), f"must be {bound} and at most {hi}")
    return float(value)


def _str(
    data: dict[str, Any], key: str, path: str, pattern: re.Pattern[str] | None = None, hint: str = ""
) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ContractError(_join(path, key), "is required and must be a non-empty string")
    if pattern is not None and not pattern.match(value):
        raise ContractError(_join(path, key), hint or "has an invalid format")
    return value


def _url(data: dict[str, Any], key: str, path: str) -> str:
    value = _str(data, key, path)
    if not value.startswith(("http://", "https://")):
        raise ContractError(_join(path, key), "must be an http(s) URL")
    return value


# --------------------------------------------------------------------------- input


@dataclass(frozen=True)
class TrainingParams:
    steps: int
    rank: int
    alpha: float
    learning_rate: float
    resolutions: list[int]
    batch_size: int
    seed: int | None
    caption_dropout: float
    save_every: int
    sample_prompts: list[str]
    sample_every: int
    sample_seed: int | None = None
    sample_first: bool = False
    auto_caption: bool = True

    @classmethod
    def from_dict(cls, data: Any, path: str = "params") -> TrainingParams:
        data = _require_dict({} if data is None else data, path)
        _reject_unknown(data, set(PARAM_DEFAULTS), path)
        merged = {**PARAM_DEFAULTS, **data}
        rank = _int(merged, "rank", path, 4, 128)
        if merged["alpha"] is None:
            merged["alpha"] = rank
        if merged["alpha"] != rank:
            raise ContractError(
                _join(path, "alpha"),
                "must be null or equal to rank: AI Toolkit trains FLUX LoRAs with alpha = rank",
            )
        return cls(
            steps=_int(merged, "steps", path, 100, 6000),
            rank=rank,
            alpha=_float(merged, "alpha", path, 0.0, 1024.0, open_lo=True),
            learning_rate=_float(merged, "learning_rate", path, 1e-6, 1e-2),
            resolutions=_resolutions(merged["resolutions"], _join(path, "resolutions")),
            batch_size=_int(merged, "batch_size", path, 1, 8),
            seed=_seed(merged["seed"], _join(path, "seed")),
            caption_dropout=_float(merged, "caption_dropout", path, 0.0, 0.5),
            save_every=_int(merged, "save_every", path, 50),
            sample_prompts=_prompts(merged["sample_prompts"], _join(path, "sample_prompts")),
            sample_every=_int(merged, "sample_every", path, 0),
            sample_seed=_seed(merged["sample_seed"], _join(path, "sample_seed")),
            sample_first=_bool(merged, "sample_first", path),
            auto_caption=_bool(merged, "auto_caption", path),
        )

    @property
    def sampling(self) -> bool:
        return self.sample_every > 0 and bool(self.sample_prompts)

    @property
    def effective_sample_seed(self) -> int:
        if self.sample_seed is not None:
            return self.sample_seed
        return self.seed if self.seed is not None else 42


def checkpoint_steps(params: TrainingParams) -> list[int]:
    """The steps AI Toolkit saves `<name>_<step:09d>.safetensors` at in a run from step 0: every multiple
    of save_every inside the loop `for step in range(start_step, steps)`, never the start step itself
    (jobs/process/BaseSDTrainProcess.py:2533, :2554, :2706-2716 at 27a03a91). The end of the run is saved
    as `<name>.safetensors`, without a step (:2818-2819, :518-523), and is the LoRA, not a checkpoint."""
    return list(range(params.save_every, params.steps, params.save_every))


def sample_steps(params: TrainingParams) -> list[int]:
    """The steps AI Toolkit renders samples at: step 0 unless `skip_first_sample` (:2477-2480), every
    multiple of sample_every inside the loop except the start step (:2555-2560, :2706, :2724-2732), and once
    more after the last step, numbered with the step count (:2820-2821). A resumed run renders no step-0
    sample (`self.step_num <= 1` is false) and skips its start step, so its samples are a subset."""
    if not params.sampling:
        return []
    every = params.sample_every
    return ([0] if params.sample_first else []) + list(range(every, params.steps, every)) + [params.steps]


def _bool(data: dict[str, Any], key: str, path: str) -> bool:
    value = data[key]
    if not isinstance(value, bool):
        raise ContractError(_join(path, key), "must be true or false")
    return value


def _resolutions(value: Any, path: str) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ContractError(path, f"must be a non-empty list drawn from {list(ALLOWED_RESOLUTIONS)}")
    for index, item in enumerate(value):
        if isinstance(item, bool) or item not in ALLOWED_RESOLUTIONS:
            raise ContractError(f"{path}[{index}]", f"must be one of {list(ALLOWED_RESOLUTIONS)}")
    if len(set(value)) != len(value):
        raise ContractError(path, "must not repeat a resolution")
    return sorted(value)


def _seed(value: Any, path: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ContractError(path, "must be null or a whole number from 0 to 4294967295")
    return value


def _prompts(value: Any, path: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_SAMPLE_PROMPTS:
        raise ContractError(path, f"must be a list of at most {MAX_SAMPLE_PROMPTS} prompts")
    for index, prompt in enumerate(value):
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > 1000:
            raise ContractError(f"{path}[{index}]", "must be a non-empty string of at most 1000 characters")
        if "\x00" in prompt:  # no database or config file keeps a NUL character
            raise ContractError(f"{path}[{index}]", "must not contain NUL characters")
        # AI Toolkit substitutes ${VAR} from the environment before parsing the config and fails on
        # unset variables, so such text would break the run (or leak an env var into a sample).
        if "${" in prompt:
            raise ContractError(f"{path}[{index}]", "must not contain '${'")
    return list(value)


@dataclass(frozen=True)
class ImageSpec:
    url: str
    sha256: str
    filename: str
    caption: str | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str) -> ImageSpec:
        data = _require_dict(data, path)
        _reject_unknown(data, {"url", "sha256", "filename", "caption"}, path)
        filename = _str(
            data, "filename", path, _SAFE_FILENAME, "must be a plain file name (letters, digits, . _ -)"
        )
        if not filename.lower().endswith(IMAGE_EXTENSIONS) or ".." in filename:
            raise ContractError(_join(path, "filename"), f"must end in one of {', '.join(IMAGE_EXTENSIONS)}")
        caption = data.get("caption")
        if caption is not None and (not isinstance(caption, str) or len(caption) > 2000):
            raise ContractError(_join(path, "caption"), "must be null or a string of at most 2000 characters")
        return cls(
            url=_url(data, "url", path),
            sha256=_str(data, "sha256", path, _SHA256, "must be 64 lowercase hexadecimal characters"),
            filename=filename,
            caption=caption,
        )


@dataclass(frozen=True)
class CheckpointTarget:
    """Where the checkpoint AI Toolkit saves at `step` goes, and the optimizer state saved with it."""

    step: int
    upload_url: str
    optimizer_upload_url: str


@dataclass(frozen=True)
class SampleTarget:
    """Where the sample of prompt `prompt_index` (0-based, in `params.sample_prompts` order) rendered at
    `step` goes."""

    step: int
    prompt_index: int
    upload_url: str


@dataclass(frozen=True)
class OutputTarget:
    """Where the worker puts what it makes, as pre-signed PUT URLs.

    `checkpoints` and `samples` are optional and may name any subset of what the run will make
    (`checkpoint_steps`, `sample_steps` x prompts): the worker uploads what has a target and skips the
    rest. Steps and prompts are known when the job is built, so every key is deterministic and the
    backend signs them all up front; each URL is a PUT to one object key, and its expiry must cover the
    run (the LoRA's URL already has to).

    Additive: a base model with two experts (`BaseModel.SPLIT`, Wan 2.2) makes two LoRA files; then
    `lora_upload_url` takes the high-noise one and `lora_low_noise_upload_url` (required) the low-noise one.
    Checkpoints of such a model are not uploaded (each is two files); its runs do not resume."""

    lora_name: str
    lora_upload_url: str
    checkpoints: list[CheckpointTarget] = field(default_factory=list)
    samples: list[SampleTarget] = field(default_factory=list)
    lora_low_noise_upload_url: str | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str = "output", params: TrainingParams | None = None) -> OutputTarget:
        data = _require_dict(data, path)
        keys = {"lora_name", "lora_upload_url", "checkpoints", "samples", "lora_low_noise_upload_url"}
        _reject_unknown(data, keys, path)
        low_noise = data.get("lora_low_noise_upload_url")
        return cls(
            lora_name=_str(data, "lora_name", path, _SAFE_NAME, "must be letters, digits, _ or - (no dots)"),
            lora_upload_url=_url(data, "lora_upload_url", path),
            lora_low_noise_upload_url=(
                None if low_noise is None else _url(data, "lora_low_noise_upload_url", path)
            ),
            checkpoints=_checkpoint_targets(data.get("checkpoints"), _join(path, "checkpoints"), params),
            samples=_sample_targets(data.get("samples"), _join(path, "samples"), params),
        )

    def checkpoint_for(self, step: int) -> CheckpointTarget | None:
        return next((target for target in self.checkpoints if target.step == step), None)

    def sample_for(self, step: int, prompt_index: int) -> SampleTarget | None:
        return next((t for t in self.samples if t.step == step and t.prompt_index == prompt_index), None)


def _list(value: Any, path: str, limit: int) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise ContractError(path, f"must be a list of at most {limit} entries")
    return value


def _checkpoint_targets(value: Any, path: str, params: TrainingParams | None) -> list[CheckpointTarget]:
    expected = set(checkpoint_steps(params)) if params is not None else None
    targets, seen = [], set()
    for index, item in enumerate(_list(value, path, 6000)):
        where = f"{path}[{index}]"
        item = _require_dict(item, where)
        _reject_unknown(item, {"step", "upload_url", "optimizer_upload_url"}, where)
        step = _int(item, "step", where, 1)
        if expected is not None and step not in expected:
            raise ContractError(_join(where, "step"), "is not a step the trainer saves a checkpoint at")
        if step in seen:
            raise ContractError(_join(where, "step"), "repeats another checkpoint's step")
        seen.add(step)
        targets.append(
            CheckpointTarget(
                step=step,
                upload_url=_url(item, "upload_url", where),
                optimizer_upload_url=_url(item, "optimizer_upload_url", where),
            )
        )
    return targets


def _sample_targets(value: Any, path: str, params: TrainingParams | None) -> list[SampleTarget]:
    expected = set(sample_steps(params)) if params is not None else None
    prompts = len(params.sample_prompts) if params is not None else MAX_SAMPLE_PROMPTS
    targets, seen = [], set()
    for index, item in enumerate(_list(value, path, MAX_SAMPLE_UPLOADS)):
        where = f"{path}[{index}]"
        item = _require_dict(item, where)
        _reject_unknown(item, {"step", "prompt_index", "upload_url"}, where)
        step = _int(item, "step", where, 0)
        if expected is not None and step not in expected:
            raise ContractError(_join(where, "step"), "is not a step the trainer renders samples at")
        prompt_index = _int(item, "prompt_index", where, 0)
        if prompt_index >= prompts:
            raise ContractError(_join(where, "prompt_index"), f"must be below the {prompts} sample prompts")
        if (step, prompt_index) in seen:
            raise ContractError(where, "repeats another sample's step and prompt_index")
        seen.add((step, prompt_index))
        targets.append(
            SampleTarget(step=step, prompt_index=prompt_index, upload_url=_url(item, "upload_url", where))
        )
    return targets


@dataclass(frozen=True)
class ResumeSpec:
    """A checkpoint (and the optimizer state saved with it) to continue training from, at `step`.

    Sent in the job input when the backend starts a new job for a run whose worker was lost, or in the
    answer to the "started" callback when RunPod itself runs the job again (its input cannot change).
    The worker checks both files' sha256 and that the checkpoint's own metadata says `step`, lays them where
    AI Toolkit resumes from (see runpod_worker/resume.py) and the trainer continues at `step`."""

    step: int
    checkpoint_url: str
    checkpoint_sha256: str
    optimizer_url: str | None = None
    optimizer_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: Any, params: TrainingParams, path: str = "resume") -> ResumeSpec | None:
        if data is None:
            return None
        data = _require_dict(data, path)
        allowed = {"step", "checkpoint_url", "checkpoint_sha256", "optimizer_url", "optimizer_sha256"}
        _reject_unknown(data, allowed, path)
        step = _int(data, "step", path, 1)
        if step not in checkpoint_steps(params):
            raise ContractError(_join(path, "step"), "is not a step the trainer saves a checkpoint at")
        optimizer_url = data.get("optimizer_url")
        hint = "must be 64 lowercase hexadecimal characters"
        return cls(
            step=step,
            checkpoint_url=_url(data, "checkpoint_url", path),
            checkpoint_sha256=_str(data, "checkpoint_sha256", path, _SHA256, hint),
            optimizer_url=None if optimizer_url is None else _url(data, "optimizer_url", path),
            optimizer_sha256=None
            if optimizer_url is None
            else _str(data, "optimizer_sha256", path, _SHA256, hint),
        )


@dataclass(frozen=True)
class Callback:
    url: str
    token: str = field(repr=False)  # never printed in logs or tracebacks

    @classmethod
    def from_dict(cls, data: Any, path: str = "callback") -> Callback | None:
        if data is None:
            return None
        data = _require_dict(data, path)
        _reject_unknown(data, {"url", "token"}, path)
        return cls(url=_url(data, "url", path), token=_str(data, "token", path))


_INPUT_KEYS = {
    "contract_version",
    "run_id",
    "trigger_word",
    "base_model",
    "gpu_preset",
    "params",
    "images",
    "output",
    "callback",
    "resume",
}


@dataclass(frozen=True)
class JobInput:
    run_id: str
    trigger_word: str
    images: list[ImageSpec]
    output: OutputTarget
    params: TrainingParams
    base_model: str = BaseModel.DEFAULT
    gpu_preset: str | None = None
    callback: Callback | None = None
    resume: ResumeSpec | None = None
    contract_version: int = CONTRACT_VERSION

    @classmethod
    def from_dict(cls, data: Any) -> JobInput:
        data = _require_dict(data, "")
        _reject_unknown(data, _INPUT_KEYS, "")
        if data.get("contract_version") != CONTRACT_VERSION:
            raise ContractError(
                "contract_version", f"must be {CONTRACT_VERSION}; rebuild the job with this contract"
            )
        base_model = data.get("base_model", BaseModel.DEFAULT)
        if base_model not in BaseModel.SUPPORTED:
            raise ContractError("base_model", f"must be one of {list(BaseModel.SUPPORTED)}")
        gpu_preset = data.get("gpu_preset")
        if gpu_preset is not None and gpu_preset not in GpuPreset.ALL:
            raise ContractError("gpu_preset", f"must be null or one of {list(GpuPreset.ALL)}")
        params = TrainingParams.from_dict(data.get("params"))
        output = OutputTarget.from_dict(data.get("output"), params=params)
        if (base_model in BaseModel.SPLIT) != (output.lora_low_noise_upload_url is not None):
            needs = "is required" if base_model in BaseModel.SPLIT else "is only for a model with two experts"
            raise ContractError("output.lora_low_noise_upload_url", f"{needs} ({base_model})")
        return cls(
            run_id=_str(data, "run_id", "", _UUID, "must be a UUID"),
            trigger_word=_str(
                data, "trigger_word", "", _TRIGGER, "must be one word of letters, digits, _ or -"
            ),
            images=_images(data.get("images")),
            output=output,
            params=params,
            base_model=base_model,
            gpu_preset=gpu_preset,
            callback=Callback.from_dict(data.get("callback")),
            resume=ResumeSpec.from_dict(data.get("resume"), params),
        )

    def to_dict(self) -> dict[str, Any]:
        """The additive fields only when set: a job that uses none of them is the same document as before
        they existed, so a worker image from before them still takes it."""
        data = asdict(self)
        if data["resume"] is None:
            del data["resume"]
        for key in ("checkpoints", "samples", "lora_low_noise_upload_url"):
            if not data["output"][key]:
                del data["output"][key]
        for key in ("sample_seed", "sample_first", "auto_caption"):
            if data["params"][key] == PARAM_DEFAULTS[key]:
                del data["params"][key]
        return data


def _images(value: Any) -> list[ImageSpec]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_IMAGES:
        raise ContractError("images", f"must be a list of 1 to {MAX_IMAGES} images")
    images = [ImageSpec.from_dict(item, f"images[{index}]") for index, item in enumerate(value)]
    seen: set[str] = set()
    for index, image in enumerate(images):
        # Captions live beside images as <stem>.txt, so two images may not share a stem.
        stem = image.filename.rsplit(".", 1)[0].lower()
        if stem in seen:
            raise ContractError(
                f"images[{index}].filename", "repeats another image's name (ignoring extension)"
            )
        seen.add(stem)
    return images


# --------------------------------------------------------------------------- output and progress


@dataclass(frozen=True)
class LoraArtifact:
    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_gb: float


@dataclass(frozen=True)
class Timings:
    download_s: float
    train_s: float
    upload_s: float
    # Additive: the time spent captioning images sent without a caption (loading the captioner included);
    # 0 when nothing was captioned, and then absent from the document.
    caption_s: float = 0.0


@dataclass(frozen=True)
class CaptionArtifact:
    """A caption the worker made for an image sent without one (`params.auto_caption`), as the studio keeps
    captions: `[trigger]` where the trigger word goes, which the worker puts first. It trained on this
    caption with `[trigger]` filled in. `filename` and `sha256` are the image's, as the input gave them."""

    filename: str
    sha256: str
    caption: str

    @classmethod
    def from_dict(cls, data: Any) -> CaptionArtifact:
        return cls(filename=str(data["filename"]), sha256=str(data["sha256"]), caption=str(data["caption"]))


@dataclass(frozen=True)
class CheckpointArtifact:
    """A checkpoint uploaded to its `CheckpointTarget`, as the bytes that left the worker. `name` is AI
    Toolkit's file name, `<lora_name>_<step:09d>.safetensors`; the optimizer fields are null when AI
    Toolkit could not save its optimizer state (BaseSDTrainProcess.py:702-714 prints and carries on)."""

    step: int
    name: str
    bytes: int
    sha256: str
    optimizer_bytes: int | None = None
    optimizer_sha256: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> CheckpointArtifact:
        opt_bytes, opt_sha = data.get("optimizer_bytes"), data.get("optimizer_sha256")
        return cls(
            step=int(data["step"]),
            name=str(data["name"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            optimizer_bytes=None if opt_bytes is None else int(opt_bytes),
            optimizer_sha256=None if opt_sha is None else str(opt_sha),
        )


@dataclass(frozen=True)
class SampleArtifact:
    """A sample image uploaded to its `SampleTarget`. `filename` is AI Toolkit's,
    `<milliseconds>__<step:09d>_<prompt_index>.<ext>` (BaseSDTrainProcess.py:304-309,
    toolkit/config_modules.py:1230-1236)."""

    step: int
    prompt_index: int
    filename: str
    bytes: int
    sha256: str

    @classmethod
    def from_dict(cls, data: Any) -> SampleArtifact:
        return cls(
            step=int(data["step"]),
            prompt_index=int(data["prompt_index"]),
            filename=str(data["filename"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
        )


@dataclass(frozen=True)
class JobOutput:
    lora: LoraArtifact
    steps: int
    trainer_version: str
    gpu: GpuInfo
    timings: Timings
    contract_version: int = CONTRACT_VERSION
    # Additive: every checkpoint and sample this delivery uploaded (each was also reported in a progress
    # callback as it appeared), and the step it resumed from (null: it trained from step 0).
    checkpoints: list[CheckpointArtifact] = field(default_factory=list)
    samples: list[SampleArtifact] = field(default_factory=list)
    resumed_from_step: int | None = None
    # Additive: the low-noise expert's LoRA of a `BaseModel.SPLIT` model (`lora` is then the high-noise one).
    lora_low_noise: LoraArtifact | None = None
    # Additive: the captions the worker made for images sent without one, the captioner that made them
    # (`<Hub id>@<revision>`, or the simulator's name), and, when captioning failed for some or all of those
    # images, why: they trained on the bare trigger word instead and have no entry in `captions`.
    captions: list[CaptionArtifact] = field(default_factory=list)
    captioner: str | None = None
    caption_error: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> JobOutput:
        data = _require_dict(data, "output")
        try:
            lora, gpu, timings = data["lora"], data["gpu"], data["timings"]
            return cls(
                lora=LoraArtifact(
                    name=str(lora["name"]), bytes=int(lora["bytes"]), sha256=str(lora["sha256"])
                ),
                steps=int(data["steps"]),
                trainer_version=str(data["trainer_version"]),
                gpu=GpuInfo(name=str(gpu["name"]), memory_gb=float(gpu["memory_gb"])),
                timings=Timings(
                    download_s=float(timings["download_s"]),
                    train_s=float(timings["train_s"]),
                    upload_s=float(timings["upload_s"]),
                    caption_s=float(timings.get("caption_s") or 0.0),
                ),
                contract_version=int(data.get("contract_version", CONTRACT_VERSION)),
                checkpoints=[CheckpointArtifact.from_dict(c) for c in data.get("checkpoints") or []],
                samples=[SampleArtifact.from_dict(c) for c in data.get("samples") or []],
                resumed_from_step=None
                if data.get("resumed_from_step") is None
                else int(data["resumed_from_step"]),
                lora_low_noise=_lora_artifact(data.get("lora_low_noise")),
                captions=[CaptionArtifact.from_dict(c) for c in data.get("captions") or []],
                captioner=None if data.get("captioner") is None else str(data["captioner"]),
                caption_error=None if data.get("caption_error") is None else str(data["caption_error"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ContractError("output", f"is not a worker output document ({exc!r})") from exc

    def to_dict(self) -> dict[str, Any]:
        """The additive fields only when they say something: a run without samples, checkpoints, resume or
        captioning gives the same document as before they existed."""
        data = asdict(self)
        for key in (
            "checkpoints",
            "samples",
            "resumed_from_step",
            "lora_low_noise",
            "captions",
            "captioner",
            "caption_error",
        ):
            if data[key] in ([], None):
                del data[key]
        if not data["timings"]["caption_s"]:
            del data["timings"]["caption_s"]
        return data


def _lora_artifact(data: Any) -> LoraArtifact | None:
    if data is None:
        return None
    return LoraArtifact(name=str(data["name"]), bytes=int(data["bytes"]), sha256=str(data["sha256"]))


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Progress:
        data = _require_dict(data, "progress")
        stage = data.get("stage")
        if stage not in Stage.ALL:
            raise ContractError("progress.stage", f"must be one of {list(Stage.ALL)}")
        loss, eta = data.get("loss"), data.get("eta_s")
        return cls(
            stage=stage,
            step=int(data.get("step") or 0),
            total_steps=int(data.get("total_steps") or 0),
            loss=None if loss is None else float(loss),
            eta_s=None if eta is None else float(eta),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class WorkerError:
    code: str
    message: str
    log_tail: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def parse_error(value: str | dict[str, Any] | None) -> WorkerError:
    """Reads a RunPod job `error` whatever produced it: our handler, the SDK's exception JSON, or text."""
    if value is None or value == "":
        return WorkerError(ErrorCode.UNKNOWN, "The worker failed without saying why.")
    data: Any = value
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except ValueError:
            return WorkerError(ErrorCode.TRAINER_FAILED, value)
    if not isinstance(data, dict):
        return WorkerError(ErrorCode.UNKNOWN, str(value))
    if "code" in data and "message" in data:
        code = data["code"] if data["code"] in ErrorCode.ALL else ErrorCode.UNKNOWN
        tail = data.get("log_tail") or []
        return WorkerError(code, str(data["message"]), [str(line) for line in tail if isinstance(line, str)])
    if "error_message" in data or "error_type" in data:
        # The SDK caught an exception our handler did not classify: a bug in the worker, not user input.
        message = f"{data.get('error_type', 'error')}: {data.get('error_message', '')}".strip()
        tail = str(data.get("error_traceback") or "").splitlines()[-20:]
        return WorkerError(ErrorCode.UNKNOWN, message, tail)
    return WorkerError(ErrorCode.UNKNOWN, json.dumps(data)[:2000])
