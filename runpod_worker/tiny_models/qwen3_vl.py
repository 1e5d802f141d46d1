"""A tiny Qwen3-VL-2B-Instruct in the exact transformers layout AI Toolkit's captioner loads.

AI Toolkit 27a03a91 captions with `extensions_built_in/captioner/Qwen3VLCaptioner.py`:
`AutoModelForImageTextToText.from_pretrained(folder)` (:75-79), which the folder's `config.json`
(`model_type: qwen3_vl`) maps to `Qwen3VLForConditionalGeneration`, then `AutoProcessor.from_pretrained`
(:103-105), which `processor_config.json` maps to `Qwen3VLProcessor` (a `Qwen2VLImageProcessor`, a
`Qwen2Tokenizer`, a `Qwen3VLVideoProcessor` and the chat template), then `processor.apply_chat_template`
and `model.generate` (:111-173). `save_pretrained` of that model and processor writes exactly that layout.

What stays as in Qwen/Qwen3-VL-2B-Instruct (revision 89644892e4d85e24eaac8bacfd4f463576704203): every class,
the vision tower's 16 px patches, 2x2 spatial merge and 2-frame temporal patches, its gelu-tanh activation,
its learned 48x48 position grid and three deepstack taps, the language model's SiLU, grouped-query attention,
interleaved multimodal RoPE in three sections and tied input/output embeddings, the image processor's
normalisation and the prompt format (`<|im_start|>user` … `<|vision_start|><|image_pad|><|vision_end|>` …
`<|im_start|>assistant`). What is tiny: widths, depths, the vocabulary (a byte-level BPE made here, with
Qwen's special tokens) and the chat template, which renders only the one message shape the captioner sends
(a user turn of images and text) in Qwen's format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runpod_worker.tiny_models.tokenizers import CORPUS, byte_unicode

REAL_MODEL = "Qwen/Qwen3-VL-2B-Instruct"
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
TEXT_WIDTH = 32
HEAD_DIM = 16  # twice the multimodal RoPE sections' sum, as 128 is twice 24 + 20 + 20
MROPE_SECTION = [4, 2, 2]  # (time, height, width) frequencies, interleaved
VISION_WIDTH = 32
VISION_DEPTH = 3
# The real chat template, cut down to what Qwen3VLCaptioner sends: one user turn of images and text, then
# the assistant's turn opened when `add_generation_prompt` is set.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}"
    "{%- for item in message.content %}"
    "{%- if item.type == 'image' or 'image' in item %}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif item.type == 'video' or 'video' in item %}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in item %}{{- item.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def build(dest: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    torch.manual_seed(seed)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer()
    processor = Qwen3VLProcessor(
        image_processor=_image_processor(),
        tokenizer=tokenizer,
        video_processor=_video_processor(),
        chat_template=CHAT_TEMPLATE,
    )
    model = Qwen3VLForConditionalGeneration(_config(tokenizer))
    _generation_config(model.generation_config, tokenizer)
    model.save_pretrained(str(dest), safe_serialization=True)
    processor.save_pretrained(str(dest))
    _mark(dest, seed)
    return dest


def _generation_config(config: Any, tokenizer: Any) -> None:
    """Ends at `<|im_end|>` as Qwen's does; and keeps the random model to the vocabulary's whole words
    (`suppress_tokens`, honoured by `generate`), so a caption is words rather than stray bytes or special
    tokens: nonsense, but text, which is what the worker has to carry."""
    space = byte_unicode()[ord(" ")]
    words = {space + word for word in _corpus_words()}
    config.eos_token_id = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    config.pad_token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    end = "<|im_end|>"
    config.suppress_tokens = sorted(
        index for piece, index in tokenizer.get_vocab().items() if piece not in words and piece != end
    )


def _vocab() -> tuple[dict[str, int], list[str]]:
    """Every byte, merges that spell the corpus' words (with and without a leading space), then Qwen's
    special tokens after the rest, as in the real vocabulary."""
    space = byte_unicode()[ord(" ")]
    tokens = list(byte_unicode().values())
    merges: list[str] = []
    words = _corpus_words()
    for word in sorted(words | {space + word for word in words}):
        pieces = list(word)
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
                tokens.append(pieces[0] + pieces[1])
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def _corpus_words() -> set[str]:
    return {word for line in CORPUS for word in line.replace(",", " ").split()}


def _tokenizer() -> Any:
    from transformers import Qwen2Tokenizer

    vocab, merges = _vocab()
    pairs = [tuple(merge.split(" ")) for merge in merges]
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=pairs, model_max_length=262144)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer


def _image_processor() -> Any:
    from transformers import Qwen2VLImageProcessor

    # Qwen3-VL-2B-Instruct's preprocessor_config.json: 16 px patches, 2x2 merge, mean and std 0.5.
    return Qwen2VLImageProcessor(
        size={"shortest_edge": 65536, "longest_edge": 16777216},
        patch_size=16,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def _video_processor() -> Any:
    from transformers import Qwen3VLVideoProcessor

    return Qwen3VLVideoProcessor()


def _config(tokenizer: Any) -> Any:
    from transformers import Qwen3VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    return Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": TEXT_WIDTH,
            "intermediate_size": 2 * TEXT_WIDTH,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": HEAD_DIM,
            "hidden_act": "silu",
            "max_position_embeddings": 262144,
            "rms_norm_eps": 1e-6,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": MROPE_SECTION,
                "mrope_interleaved": True,
            },
            "tie_word_embeddings": True,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
        },
        vision_config={
            "depth": VISION_DEPTH,
            "hidden_size": VISION_WIDTH,
            "hidden_act": "gelu_pytorch_tanh",
            "intermediate_size": 2 * VISION_WIDTH,
            "num_heads": 2,
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": TEXT_WIDTH,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": list(range(VISION_DEPTH)),
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def _mark(dest: Path, seed: int) -> None:
    # Says what this folder is, so nobody mistakes it for real weights.
    note = {"tiny_model_of": REAL_MODEL, "random_weights": True, "seed": seed}
    (dest / "TINY_MODEL.json").write_text(json.dumps(note, indent=2) + "\n", encoding="utf-8")
