"""What every tiny model folder carries, and the T5-family text encoder several of them share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def mark(dest: Path, real_model: str, seed: int) -> None:
    # Says what this folder is, so nobody mistakes it for real weights.
    note = {"tiny_model_of": real_model, "random_weights": True, "seed": seed}
    (dest / "TINY_MODEL.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")


def t5_encoder(ids: dict[str, int], width: int, *, umt5: bool = False) -> Any:
    """A one-layer T5 encoder (FLUX.1's `text_encoder_2`) or UMT5 encoder (Wan 2.2's `text_encoder`): the two
    configs take the same keys."""
    if umt5:
        from transformers import UMT5Config as Config
        from transformers import UMT5EncoderModel as Model
    else:
        from transformers import T5Config as Config
        from transformers import T5EncoderModel as Model
    return Model(
        Config(
            vocab_size=ids["vocab_size"],
            d_model=width,
            d_kv=8,
            d_ff=2 * width,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
            pad_token_id=ids["pad_token_id"],
            eos_token_id=ids["eos_token_id"],
            decoder_start_token_id=ids["pad_token_id"],
        )
    )


def load_t5_tokenizer(folder: Path) -> Any:
    from transformers import T5TokenizerFast

    return T5TokenizerFast.from_pretrained(str(folder))
