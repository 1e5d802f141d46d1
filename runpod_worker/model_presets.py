"""What each base model adds to the AI Toolkit job config, per GPU preset, read from AI Toolkit 27a03a91.

FLUX.1 follows `config/examples/train_lora_flux_24gb.yaml` (runpod_worker/config.py). The others follow their
own example and the UI's defaults for the model (`ui/src/app/jobs/new/options.tsx`, the `defaults` of each
model entry: the first value is what the UI writes when the model is picked):

- Qwen-Image (`arch: qwen_image`): config/examples/train_lora_qwen_image_24gb.yaml and options.tsx:409-427.
  On 24 GB the transformer is quantised to 3 bits with the accuracy recovery adapter (example :61-68,
  "3bit is required for 24GB"), the text encoder to 8 bits, `low_vram` on; text embeddings are cached
  (example :41-42, "required for 24GB"), which at this commit keeps caption dropout: a dropped caption
  loads a cached blank embedding (toolkit/dataloader_mixins.py:2239-2251). LoRA keys are saved as
  `diffusion_model.<module>` (extensions_built_in/diffusion_models/qwen_image/qwen_image.py:418-423).
- Wan 2.2 T2V A14B (`arch: wan22_14b`): config/examples/train_lora_wan22_14b_24gb.yaml and
  options.tsx:289-326.
  Still images are one-frame videos (`num_frames: 1`, example :34 and :87); both experts train, switching
  every 10 steps (example :56, :76-79); the 24 GB preset quantises to 4 bits with its accuracy recovery
  adapter (:70-72) and caches text embeddings (:58-64). `low_vram` is on for both presets: it is what keeps
  only the expert in use on the GPU (wan22_14b_model.py:131-147). The LoRA is saved as two files,
  `<name>_high_noise.safetensors` and `<name>_low_noise.safetensors` (wan22_14b_model.py:452-493,
  `split_multistage_loras` defaults to true, toolkit/config_modules.py:217): the form ComfyUI and diffusers'
  Wan 2.2 pipeline load, one LoRA per expert.
- Wan 2.2 TI2V 5B (`arch: wan22_5b`): no example config at this commit; the UI's defaults,
  options.tsx:366-392. One transformer, so one LoRA file. 8-bit transformer and UMT5 with `low_vram` on
  24 GB (:373-375, the UI's `qtype` qfloat8, jobConfig.ts:109-111), `weighted` timesteps (:382), samples at
  768 px (:380-381) with the UI's sample guidance 4 and 30 steps (ui/src/helpers/defaultSamples.ts:47-48)
  and `fps` 24 (:379, :384).
  Two defaults are for video and are not taken, since a character LoRA trains on still images: samples are
  one frame (`num_frames: 1`, the UI's 121 would render a 5 s video per sample), and `do_i2v` is off (the
  UI's true conditions a video's first frame, wan22_5b_model.py:266-298; on a still whose latents are cached
  the batch has no image tensor, data_transfer_object/data_loader.py:275-283, and :282-285 there would fail
  on it).
- Z-Image (`arch: zimage`, Tongyi-MAI/Z-Image, the undistilled base): options.tsx:683-701. No adapter: the
  Turbo model needs a de-distillation training adapter (options.tsx:659-681) and LoRAs trained on the base
  also load into Turbo. 8-bit transformer and text encoder with `low_vram` on 24 GB.

The 80 GB preset quantises nothing, like FLUX.1's: bf16 weights fit, and quantising costs minutes per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runpod_worker.contract import BaseModel, GpuPreset


@dataclass(frozen=True)
class ModelPreset:
    arch: str
    # qtype on 24 GB cards; "uint3|ARA" style values get the adapter's path appended by the config builder.
    qtype_24gb: str
    ara_24gb: bool = False
    low_vram_80gb: bool = False
    guidance_scale: float = 4
    sample_steps: int = 25
    timestep_type: str = "weighted"
    train: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    sample: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, ModelPreset] = {
    BaseModel.QWEN_IMAGE: ModelPreset(
        arch="qwen_image",
        qtype_24gb="uint3",
        ara_24gb=True,
        guidance_scale=3,  # example :91
        sample_steps=25,  # example :92
        timestep_type="weighted",  # options.tsx:419
        train={"cache_text_embeddings": True, "gradient_accumulation": 1},  # example :42, :45
        sample={"sample_start_step": 0},  # example :72
    ),
    BaseModel.WAN22: ModelPreset(
        arch="wan22_14b",
        qtype_24gb="uint4",
        ara_24gb=True,
        low_vram_80gb=True,
        guidance_scale=3.5,  # example :107
        sample_steps=25,  # example :108
        timestep_type="linear",  # example :44, options.tsx:302
        # example :56, :64, :39
        train={"switch_boundary_every": 10, "cache_text_embeddings": True, "gradient_accumulation": 1},
        dataset={"num_frames": 1},  # example :34
        sample={"sample_start_step": 0, "num_frames": 1, "fps": 16},  # example :83, :87-88
        model={"model_kwargs": {"train_high_noise": True, "train_low_noise": True}},  # example :76-79
        network={"split_multistage_loras": True},
    ),
    BaseModel.WAN22_5B: ModelPreset(
        arch="wan22_5b",
        qtype_24gb="qfloat8",  # jobConfig.ts:109
        guidance_scale=4,  # defaultSamples.ts:47
        sample_steps=30,  # defaultSamples.ts:48
        timestep_type="weighted",  # options.tsx:382
        dataset={"num_frames": 1, "do_i2v": False, "fps": 24},  # options.tsx:383-384; see above
        sample={"num_frames": 1, "fps": 24, "width": 768, "height": 768},  # options.tsx:378-381
    ),
    BaseModel.Z_IMAGE: ModelPreset(
        arch="zimage",
        qtype_24gb="qfloat8",  # options.tsx:698
        guidance_scale=4,  # the UI's sample default (options.tsx:659-681 changes it only for Turbo)
        sample_steps=30,  # options.tsx:699
        timestep_type="weighted",  # options.tsx:697
        train={"unload_text_encoder": False},  # options.tsx:694
    ),
}


def model_section(base_model: str, preset: str, source: str, ara: str | None) -> dict[str, Any]:
    """The `model` section of a non-FLUX base model."""
    spec = PRESETS[base_model]
    low_vram_card = preset == GpuPreset.LOW_VRAM_24GB
    qtype = spec.qtype_24gb if low_vram_card else "qfloat8"
    if low_vram_card and spec.ara_24gb and ara:
        qtype = f"{qtype}|{ara}"
    return {
        "name_or_path": source,
        "arch": spec.arch,
        "quantize": low_vram_card,
        "qtype": qtype,
        "quantize_te": low_vram_card,
        "qtype_te": "qfloat8",
        "low_vram": low_vram_card or spec.low_vram_80gb,
        **spec.model,
    }
