"""A tiny Z-Image in the exact diffusers layout AI Toolkit loads.

AI Toolkit 27a03a91 loads Z-Image in `extensions_built_in/diffusion_models/z_image/z_image.py`
(`ZImageModel.load_model`, lines 211-329): its `ZImageTransformer2DModel` subclass from `transformer/`
(toolkit/models/v2/z_image.py), `AutoTokenizer` from `tokenizer/`, `Qwen3ForCausalLM` from `text_encoder/`
and `AutoencoderKL` from `vae/`; a local folder counts as a full checkpoint when it has `text_encoder/`
(:182-187). It builds its own scheduler (:42-46). `ZImagePipeline.save_pretrained` writes that layout.

What stays as in Tongyi-MAI/Z-Image: every class, the FLUX.1 VAE (16 latent channels, 8x down-sampling,
its scale and shift), the transformer's 2x2 patches, its caption width equal to the text encoder's, the
Qwen chat template the pipeline renders prompts through (and the second-to-last hidden state it reads)
and the scheduler configuration. What is tiny: widths, depths and the vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runpod_worker.tiny_models.common import mark
from runpod_worker.tiny_models.flux import flux_vae
from runpod_worker.tiny_models.tokenizers import QWEN3_CHAT_TEMPLATE, write_qwen_tokenizer

# Tongyi-MAI/Z-Image scheduler/scheduler_config.json (AI Toolkit trains with the same, z_image.py:42-46).
SCHEDULER: dict[str, Any] = {"num_train_timesteps": 1000, "use_dynamic_shifting": False, "shift": 3.0}
TEXT_WIDTH = 32  # also the transformer's cap_feat_dim (2560 in the real model)
DIM = 32
HEADS = 2
AXES = [4, 6, 6]  # [32, 48, 48] splits 128; the axes sum to the head width (DIM / HEADS)


def build(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from diffusers import ZImagePipeline

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    ids = write_qwen_tokenizer(dest / "tokenizer", chat_template=QWEN3_CHAT_TEMPLATE)
    pipe = ZImagePipeline(
        scheduler=_scheduler(),
        vae=flux_vae(),
        text_encoder=_text_encoder(ids),
        tokenizer=_load_tokenizer(dest / "tokenizer"),
        transformer=_transformer(),
    )
    pipe.save_pretrained(str(dest), safe_serialization=True)
    mark(dest, "Tongyi-MAI/Z-Image", seed)
    return dest


def _scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER)


def _text_encoder(ids: dict[str, int]) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=ids["vocab_size"],
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            # The pipeline reads hidden_states[-2]: two layers keep that a layer's output.
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=ids["pad_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["pad_token_id"],
        )
    )


def _transformer() -> Any:
    from diffusers import ZImageTransformer2DModel

    return ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=DIM,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=HEADS,
        n_kv_heads=HEADS,
        cap_feat_dim=TEXT_WIDTH,
        axes_dims=AXES,
        axes_lens=[1024, 512, 512],
    )


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))
