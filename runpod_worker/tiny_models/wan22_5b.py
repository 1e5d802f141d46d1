"""A tiny Wan 2.2 TI2V 5B in the exact diffusers layout AI Toolkit loads.

AI Toolkit 27a03a91 loads Wan 2.2 5B in `extensions_built_in/diffusion_models/wan22/wan22_5b_model.py`
(`Wan225bModel`, arch `wan22_5b`), whose loading is `Wan21.load_model`
(toolkit/models/wan21/wan21.py:393-470):
one `WanTransformer3DModel` from `transformer/`, the UMT5 tokenizer and encoder from `tokenizer/` and
`text_encoder/` when the folder has them, and, unlike the 14B, the model's own VAE from `vae/` (it sets no
`_wan_vae_path`, :454-460): the Wan 2.2 VAE, which AI Toolkit loads with its own `AutoencoderKLWan`
(toolkit/models/wan21/autoencoder_kl_wan.py, patchifying the image 2x2 before encoding, :159-160).
`WanPipeline.save_pretrained` writes the layout, as diffusers' conversion script does for this model
(scripts/convert_wan_to_diffusers.py:1222-1230 at c9438378: one transformer, `expand_timesteps=True`).

What stays as in Wan-AI/Wan2.2-TI2V-5B-Diffusers: every class, the one transformer with 48 latent channels
in and out and (1, 2, 2) patches, the Wan 2.2 VAE's 48 latent channels, 2x2 patchify of 12 channels, 16x
spatial and 4x temporal down-sampling, its residual blocks and per-channel latent statistics (the script's
`vae22_diffusers_config`, :849-960), the UMT5 encoder feeding `text_dim`, and the UniPC scheduler with flow
shift 5 (wan22_5b_model.py:21-50). What is tiny: widths, depths and the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runpod_worker.tiny_models.common import load_t5_tokenizer, mark, t5_encoder
from runpod_worker.tiny_models.tokenizers import write_t5_tokenizer
from runpod_worker.tiny_models.wan22 import HEAD_DIM, SCHEDULER, TEXT_WIDTH

LATENT_CHANNELS = 48
# scripts/convert_wan_to_diffusers.py:859-958 (vae22_diffusers_config): the Wan 2.2 VAE's latent statistics.
LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]  # fmt: skip
LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]  # fmt: skip


def build(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from diffusers import WanPipeline

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    ids = write_t5_tokenizer(dest / "tokenizer")
    pipe = WanPipeline(
        tokenizer=load_t5_tokenizer(dest / "tokenizer"),
        text_encoder=t5_encoder(ids, TEXT_WIDTH, umt5=True),
        vae=_vae(),
        scheduler=_scheduler(),
        transformer=_transformer(),
        expand_timesteps=True,
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    mark(dest, "Wan-AI/Wan2.2-TI2V-5B-Diffusers", seed)
    return dest


def _scheduler() -> Any:
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(**{**SCHEDULER, "flow_shift": 5.0})


def _vae() -> Any:
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=LATENT_CHANNELS,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        attn_scales=[],
        temperal_downsample=[False, True, True],
        dropout=0.0,
        latents_mean=LATENTS_MEAN,
        latents_std=LATENTS_STD,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
    )


def _transformer() -> Any:
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=HEAD_DIM,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        text_dim=TEXT_WIDTH,
        freq_dim=32,
        ffn_dim=2 * 2 * HEAD_DIM,
        num_layers=1,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
    )
