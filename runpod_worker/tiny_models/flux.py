"""A tiny FLUX.1 (dev or schnell) in the exact diffusers layout AI Toolkit loads.

AI Toolkit 27a03a91 loads FLUX.1 in `toolkit/stable_diffusion_model.py` (`StableDiffusion.load_model`,
the `is_flux` branch): `FluxTransformer2DModel` from `transformer/`, `FlowMatchEulerDiscreteScheduler`
from `scheduler/`, `AutoencoderKL` from `vae/`, `T5TokenizerFast` / `T5EncoderModel` from `tokenizer_2/` /
`text_encoder_2/` and `CLIPTokenizer` / `CLIPTextModel` from `tokenizer/` / `text_encoder/`; a local
folder counts as a full checkpoint when it has `text_encoder/`. `FluxPipeline.save_pretrained` writes
exactly that layout with `model_index.json`.

What stays as in black-forest-labs/FLUX.1-dev: every class, the VAE's 16 latent channels and 8x
down-sampling (four blocks), the transformer's 64 input channels (16 latents packed 2x2), T5's gated-GELU
feed-forward, CLIP's quick-GELU, both tokenizers' lengths, the VAE's scaling and shift factors and the
scheduler configuration. What is tiny: widths, depths and vocabularies. Schnell differs from dev in
`guidance_embeds` (false: it is not guidance-distilled) and in its scheduler (shift 1, no dynamic shifting).

FLUX.1-schnell trains only through its training adapter (config/examples/train_lora_flux_schnell_24gb.yaml,
`assistant_lora_path: ostris/FLUX.1-schnell-training-adapter`), so the tiny schnell comes with one of its own
in `schnell_training_adapter/pytorch_lora_weights.safetensors` (the file name AI Toolkit reads from a folder,
toolkit/stable_diffusion_model.py:699-702): a LoRA in the diffusers form the real adapter has, over every
Linear of the transformer blocks, which AI Toolkit fuses into the transformer before training (:718-790) and
loads again to sample with (toolkit/assistant_lora.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runpod_worker.tiny_models.common import load_t5_tokenizer, mark, t5_encoder
from runpod_worker.tiny_models.tokenizers import write_clip_tokenizer, write_t5_tokenizer

DEV_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


@dataclass(frozen=True)
class Variant:
    name: str
    guidance_embeds: bool
    scheduler: dict[str, Any] = field(default_factory=dict)


DEV = Variant("FLUX.1-dev", guidance_embeds=True, scheduler=DEV_SCHEDULER)
SCHNELL = Variant(
    "FLUX.1-schnell",
    guidance_embeds=False,
    scheduler={**DEV_SCHEDULER, "shift": 1.0, "use_dynamic_shifting": False},
)

CLIP_WIDTH = 32  # also the transformer's pooled_projection_dim: Flux pools CLIP's last hidden state
T5_WIDTH = 32  # also the transformer's joint_attention_dim
HEAD_DIM = 16  # split by axes_dims_rope over (text index, height, width), as (16, 56, 56) splits 128
ROPE_AXES = (4, 6, 6)


def build(dest: Path, variant: Variant, *, seed: int = 0) -> Path:
    import torch
    from diffusers import FluxPipeline

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    clip_ids = write_clip_tokenizer(dest / "tokenizer")
    t5_ids = write_t5_tokenizer(dest / "tokenizer_2")
    pipe = FluxPipeline(
        scheduler=_scheduler(variant),
        vae=flux_vae(),
        text_encoder=_clip(clip_ids),
        tokenizer=_load_clip_tokenizer(dest / "tokenizer"),
        text_encoder_2=t5_encoder(t5_ids, T5_WIDTH),
        tokenizer_2=load_t5_tokenizer(dest / "tokenizer_2"),
        transformer=_transformer(variant),
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    if variant is SCHNELL:
        write_training_adapter(dest / SCHNELL_ADAPTER_DIR, pipe.transformer)
    mark(dest, variant.name, seed)
    return dest


SCHNELL_ADAPTER_DIR = "schnell_training_adapter"


def write_training_adapter(folder: Path, transformer: Any, rank: int = 4) -> Path:
    """A schnell training adapter for `transformer`: `transformer.<module>.lora_A/B.weight` for every Linear
    in its double and single blocks (the keys assistant_lora.py reads include
    `transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight`), small random weights."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith(
            ("transformer_blocks.", "single_transformer_blocks.")
        ):
            tensors[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, module.in_features) * 0.01
            tensors[f"transformer.{name}.lora_B.weight"] = torch.randn(module.out_features, rank) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "pytorch_lora_weights.safetensors"))
    return folder


def _scheduler(variant: Variant) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**variant.scheduler)


def flux_vae() -> Any:
    """FLUX.1's VAE shape, also Z-Image's: 16 latent channels, 8x down-sampling, its scale and shift."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        act_fn="silu",
        latent_channels=16,
        norm_num_groups=4,
        sample_size=1024,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        force_upcast=True,
        mid_block_add_attention=True,
    )


def _clip(ids: dict[str, int]) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=ids["vocab_size"],
            hidden_size=CLIP_WIDTH,
            intermediate_size=2 * CLIP_WIDTH,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=CLIP_WIDTH,
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["pad_token_id"],
        )
    )


def _transformer(variant: Variant) -> Any:
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=HEAD_DIM,
        num_attention_heads=2,
        joint_attention_dim=T5_WIDTH,
        pooled_projection_dim=CLIP_WIDTH,
        guidance_embeds=variant.guidance_embeds,
        axes_dims_rope=ROPE_AXES,
    )


def _load_clip_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))
