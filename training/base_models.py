"""The base models a character LoRA can be trained on: what each is for, what it costs, where it runs.

One table, read by the train form, the API, `train_character`, pricing and the docs (docs/TRAINING.md,
"Base models"). What the worker writes into AI Toolkit's config for each lives in
runpod_worker/model_presets.py (FLUX.1 in runpod_worker/config.py), taken from AI Toolkit's own examples.

Step times: FLUX.1-dev's are measured (`TRAINING_SECONDS_PER_STEP`, per GPU). The others are scaled from them
by `step_factor`, the size of the transformer one training step runs through relative to FLUX.1's 12B:
Qwen-Image's 20B, one 14B expert of Wan 2.2 A14B per step, Wan 2.2 TI2V's 5B, Z-Image's 6B (the 5B's VAE
compresses 16x where the others' compress 8x, so a step sees a quarter of the tokens: its scaled figure is on
the high side). They are estimates until a GPU run measures them; the estimate, the budget check and each
run's time limit use them (training/time_limits.py: a run that cannot fit TRAINING_EXECUTION_TIMEOUT_SECONDS
on the slowest GPU the model may land on, such as 3000 Qwen-Image steps on an RTX 4090, is refused at start).

Cards: `min_vram_gb` is `BaseModel.MIN_VRAM_GB`, shared with the worker. A model trains only on the GPU pools
of the endpoint with cards that large (`gpu_pools.model_pools`); a start is refused when none fits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from runpod_worker.contract import BaseModel


@dataclass(frozen=True)
class BaseModelInfo:
    key: str
    label: str
    good_for: str
    arch: str  # AI Toolkit's model.arch
    hub_id: str
    licence: str
    loads_into: str
    # The smallest card it trains on, and how it is quantised there and on 80 GB cards.
    min_vram_gb: int
    quantisation_24gb: str
    quantisation_80gb: str
    step_factor: Decimal
    guidance_scale: float
    sample_steps: int
    trigger_word: str
    lora_files: int = 1


BASE_MODELS: dict[str, BaseModelInfo] = {
    info.key: info
    for info in (
        BaseModelInfo(
            key=BaseModel.FLUX_DEV,
            label="FLUX.1 [dev]",
            good_for="Photoreal stills with the strongest likeness; the reference choice.",
            arch="flux",
            hub_id="black-forest-labs/FLUX.1-dev",
            licence="FLUX.1 [dev] Non-Commercial License: images may be used commercially, the weights "
            "and LoRAs only non-commercially without a licence from Black Forest Labs.",
            loads_into="diffusers FluxPipeline.load_lora_weights; ComfyUI LoraLoader on FLUX.1-dev",
            min_vram_gb=BaseModel.MIN_VRAM_GB[BaseModel.FLUX_DEV],
            quantisation_24gb="8-bit (qfloat8) transformer and T5",
            quantisation_80gb="none (bf16)",
            step_factor=Decimal("1"),
            guidance_scale=4,
            sample_steps=20,
            trigger_word="in every caption; works in prompts",
        ),
        BaseModelInfo(
            key=BaseModel.FLUX_SCHNELL,
            label="FLUX.1 [schnell]",
            good_for="Fast 4-step generation under Apache 2.0; a little less likeness than dev.",
            arch="flux",
            hub_id="black-forest-labs/FLUX.1-schnell",
            licence="Apache 2.0: commercial use allowed.",
            loads_into="diffusers FluxPipeline.load_lora_weights; ComfyUI LoraLoader on FLUX.1-schnell",
            min_vram_gb=BaseModel.MIN_VRAM_GB[BaseModel.FLUX_SCHNELL],
            quantisation_24gb="8-bit (qfloat8) transformer and T5, with the training adapter",
            quantisation_80gb="none (bf16), with the training adapter",
            step_factor=Decimal("1"),
            guidance_scale=1,
            sample_steps=4,
            trigger_word="in every caption; works in prompts",
        ),
        BaseModelInfo(
            key=BaseModel.QWEN_IMAGE,
            label="Qwen-Image",
            good_for="Stills with legible text and complex scenes; follows long prompts closely.",
            arch="qwen_image",
            hub_id="Qwen/Qwen-Image",
            licence="Apache 2.0: commercial use allowed.",
            loads_into="diffusers QwenImagePipeline.load_lora_weights; ComfyUI LoraLoaderModelOnly "
            "(keys diffusion_model.*)",
            min_vram_gb=BaseModel.MIN_VRAM_GB[BaseModel.QWEN_IMAGE],
            quantisation_24gb="3-bit transformer with its accuracy recovery adapter, 8-bit text encoder, "
            "low_vram, cached text embeddings",
            quantisation_80gb="none (bf16), cached text embeddings",
            step_factor=Decimal("1.7"),
            guidance_scale=3,
            sample_steps=25,
            trigger_word="in every caption; captions are encoded once and cached",
        ),
        BaseModelInfo(
            key=BaseModel.WAN22,
            label="Wan 2.2 (14B)",
            good_for="A character for video: the LoRA drives Wan 2.2 text-to-video as well as stills.",
            arch="wan22_14b",
            hub_id="ai-toolkit/Wan2.2-T2V-A14B-Diffusers-bf16",
            licence="Apache 2.0: commercial use allowed.",
            loads_into="two files, one per expert: ComfyUI LoraLoaderModelOnly on the high-noise and on "
            "the low-noise model; diffusers WanPipeline.load_lora_weights (load_into_transformer_2 for "
            "the low-noise file)",
            min_vram_gb=BaseModel.MIN_VRAM_GB[BaseModel.WAN22],
            quantisation_24gb="4-bit transformers with their accuracy recovery adapter, 8-bit UMT5, "
            "low_vram, cached text embeddings",
            quantisation_80gb="none (bf16), one expert on the GPU at a time, cached text embeddings",
            step_factor=Decimal("1.2"),
            guidance_scale=3.5,
            sample_steps=25,
            trigger_word="in every caption; captions are encoded once and cached",
            lora_files=2,
        ),
        BaseModelInfo(
            key=BaseModel.WAN22_5B,
            label="Wan 2.2 TI2V (5B)",
            good_for="A character for video on the smaller Wan 2.2: one LoRA file for its text- and "
            "image-to-video model, at a third of the 14B's cost.",
            arch="wan22_5b",
            hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            licence="Apache 2.0: commercial use allowed.",
            loads_into="diffusers WanPipeline.load_lora_weights; ComfyUI LoraLoaderModelOnly "
            "(keys diffusion_model.*) on Wan 2.2 TI2V 5B",
            min_vram_gb=BaseModel.MIN_VRAM_GB[BaseModel.WAN22_5B],
            quantisation_24gb="8-bit (qfloat8) transformer and UMT5, low_vram",
            quantisation_80gb="none (bf16)",
            step_factor=Decimal("0.42"),
            guidance_scale=4,
            sample_steps=30,
            trigger_word="in every caption; works in prompts",
        ),
        BaseModelInfo(
            key=BaseModel.Z_IMAGE,
            label="Z-Image",
            good_for="The cheapest photoreal stills; LoRAs also load into Z-Image-Turbo (8-step).",
            arch="zimage",
            hub_id="Tongyi-MAI/Z-Image",
            licence="Apache 2.0: commercial use allowed.",
            loads_into="diffusers ZImagePipeline.load_lora_weights; ComfyUI LoraLoaderModelOnly "
            "(keys diffusion_model.*) on Z-Image or Z-Image-Turbo",
            min_vram_gb=BaseModel.MIN_VRAM_GB[BaseModel.Z_IMAGE],
            quantisation_24gb="8-bit (qfloat8) transformer and text encoder, low_vram",
            quantisation_80gb="none (bf16)",
            step_factor=Decimal("0.5"),
            guidance_scale=4,
            sample_steps=30,
            trigger_word="in every caption; works in prompts",
        ),
    )
}
DEFAULT_BASE_MODEL = BaseModel.DEFAULT
CHOICES: list[tuple[str, str]] = [(key, info.label) for key, info in BASE_MODELS.items()]


def base_model_info(key: str) -> BaseModelInfo:
    return BASE_MODELS[key]
