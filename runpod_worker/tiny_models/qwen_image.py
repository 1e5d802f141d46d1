"""A tiny Qwen-Image in the exact diffusers layout AI Toolkit loads.

AI Toolkit 27a03a91 loads Qwen-Image in `extensions_built_in/diffusion_models/qwen_image/qwen_image.py`
(`QwenImageModel.load_model`, lines 87-235): `QwenImageTransformer2DModel` from `transformer/`,
`Qwen2Tokenizer` from `tokenizer/`, `Qwen2_5_VLForConditionalGeneration` from `text_encoder/` (its vision
tower dropped at once) and `AutoencoderKLQwenImage` from `vae/`; a local folder counts as a full checkpoint
when it has `text_encoder/` (:117-120). It builds its own scheduler (:40-55), so `scheduler/` is only read by
diffusers' own pipeline. `QwenImagePipeline.save_pretrained` writes that layout with `model_index.json`.

What stays as in Qwen/Qwen-Image: every class, the VAE's 16 latent channels, 8x spatial down-sampling and
per-channel latent mean/std (the Wan 2.1 VAE), the transformer's 2x2 patches over 64 packed channels, the
text encoder's multimodal rotary sections summing to half its head width, the chat template the pipeline
prompts through (it drops the template's first 34 tokens) and the scheduler configuration. What is tiny:
widths, depths and the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runpod_worker.tiny_models.common import mark
from runpod_worker.tiny_models.tokenizers import write_qwen_tokenizer

# Qwen/Qwen-Image scheduler/scheduler_config.json (AI Toolkit trains with the same, qwen_image.py:40-55).
SCHEDULER: dict[str, Any] = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}
TEXT_WIDTH = 32  # also the transformer's joint_attention_dim (3584 in the real model)
TEXT_HEAD_DIM = 16
MROPE_SECTION = (2, 3, 3)  # (16, 24, 24) for head width 128: the sections sum to half the head width
HEAD_DIM = 16
ROPE_AXES = (4, 6, 6)  # (16, 56, 56) splits 128


def build(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from diffusers import QwenImagePipeline

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    ids = write_qwen_tokenizer(dest / "tokenizer")
    pipe = QwenImagePipeline(
        scheduler=_scheduler(),
        vae=wan_style_vae("AutoencoderKLQwenImage"),
        text_encoder=_text_encoder(ids),
        tokenizer=_load_tokenizer(dest / "tokenizer"),
        transformer=_transformer(),
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    mark(dest, "Qwen/Qwen-Image", seed)
    return dest


def _scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER)


def wan_style_vae(class_name: str) -> Any:
    """The Wan 2.1 VAE shape (Qwen-Image ships it under its own class): causal 3D convolutions, 16 latent
    channels, 8x spatial and 4x temporal down-sampling, with its per-channel latent statistics."""
    import diffusers

    vae_class = getattr(diffusers, class_name)
    return vae_class(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
    )


def _text_encoder(ids: dict[str, int]) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": ids["vocab_size"],
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 2 * TEXT_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": TEXT_WIDTH // TEXT_HEAD_DIM,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": list(MROPE_SECTION), "rope_theta": 1000000.0},
            "bos_token_id": ids["pad_token_id"],
            "eos_token_id": ids["eos_token_id"],
            "pad_token_id": ids["pad_token_id"],
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": TEXT_WIDTH,
            "fullatt_block_indexes": [0],
        },
        # Ids past the tiny vocabulary would never be looked up: Qwen-Image prompts carry no images.
        image_token_id=ids["vocab_size"] - 1,
        video_token_id=ids["vocab_size"] - 1,
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def _transformer() -> Any:
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=2,
        joint_attention_dim=TEXT_WIDTH,
        guidance_embeds=False,
        axes_dims_rope=ROPE_AXES,
    )


def _load_tokenizer(folder: Path) -> Any:
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(str(folder))
