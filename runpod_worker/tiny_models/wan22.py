"""A tiny Wan 2.2 T2V A14B (two experts) in the exact diffusers layout AI Toolkit loads.

AI Toolkit 27a03a91 loads Wan 2.2 14B in `extensions_built_in/diffusion_models/wan22/wan22_14b_model.py`
(`Wan2214bModel.load_wan_transformer`, lines 252-371): the high-noise expert, a `WanTransformer3DModel`,
from `transformer/` and the low-noise expert from the sibling `transformer_2/`, joined in a
`DualWanTransformer3DModel` that hands timesteps above 875 to the first (:34, :112-157). The rest comes from
`Wan21.load_model` (toolkit/models/wan21/wan21.py:393-470): the UMT5 tokenizer and encoder from
`tokenizer/` and `text_encoder/` when the folder has them (else the Hub's `ai-toolkit/umt5_xxl_encoder`),
and the VAE from the Hub repo `ai-toolkit/wan2.1-vae` whatever the folder holds (`_wan_vae_path`, :172 of
wan22_14b_model.py, read at wan21.py:454-457): the worker puts a local folder's `vae/` into the trainer's
Hugging Face cache under that id (runpod_worker/weights.py, `wan_vae_source`). `WanPipeline.save_pretrained`
writes the layout.

What stays as in Wan-AI/Wan2.2-T2V-A14B-Diffusers: every class, both experts and the 0.875 boundary, the
Wan 2.1 VAE's 16 latent channels, 8x spatial and 4x temporal down-sampling and latent statistics, the
transformer's (1, 2, 2) patches, the UMT5 encoder feeding `text_dim`, and the UniPC scheduler configuration.
What is tiny: widths, depths and the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runpod_worker.tiny_models.common import load_t5_tokenizer, mark, t5_encoder
from runpod_worker.tiny_models.qwen_image import wan_style_vae
from runpod_worker.tiny_models.tokenizers import write_t5_tokenizer

BOUNDARY_RATIO = 0.875
# Wan-AI/Wan2.2-T2V-A14B-Diffusers scheduler/scheduler_config.json, as AI Toolkit quotes it
# (wan22_14b_model.py:37-66).
SCHEDULER: dict[str, Any] = {
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "time_shift_type": "exponential",
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_dynamic_shifting": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}
TEXT_WIDTH = 32  # also the transformers' text_dim (4096 in the real model)
HEAD_DIM = 24  # Wan splits each head over (frames, height, width): 8 + 8 + 8 here, 44 + 42 + 42 of 128


def build(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from diffusers import WanPipeline

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    ids = write_t5_tokenizer(dest / "tokenizer")
    pipe = WanPipeline(
        tokenizer=load_t5_tokenizer(dest / "tokenizer"),
        text_encoder=t5_encoder(ids, TEXT_WIDTH, umt5=True),
        vae=wan_style_vae("AutoencoderKLWan"),
        scheduler=_scheduler(),
        transformer=_transformer(),
        transformer_2=_transformer(),
        boundary_ratio=BOUNDARY_RATIO,
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    mark(dest, "Wan-AI/Wan2.2-T2V-A14B-Diffusers", seed)
    return dest


def _scheduler() -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(**SCHEDULER)


def _transformer() -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=HEAD_DIM,
        in_channels=16,
        out_channels=16,
        text_dim=TEXT_WIDTH,
        freq_dim=32,
        ffn_dim=2 * 2 * HEAD_DIM,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )
