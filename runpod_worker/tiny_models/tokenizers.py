"""Tokenizer folders written from their own classes: a byte-level BPE CLIP tokenizer and a SentencePiece
T5 tokenizer, each with a small vocabulary made here (nothing is loaded from a hub)."""

from __future__ import annotations

import io
from pathlib import Path

# Words the smoke's captions and prompts use, so they tokenize into a few pieces rather than bytes.
CORPUS = (
    "a photo of ohwx smiling in a red coat, studio light",
    "a portrait of a person standing outside in the sun",
    "a close up photo of a face with short hair and glasses",
    "the quick brown fox jumps over the lazy dog",
)
CLIP_MAX_LENGTH = 77  # openai/clip-vit-large-patch14, the tokenizer FLUX.1 ships
T5_MAX_LENGTH = 512  # google/t5-v1_1-xxl as FLUX.1 ships it
T5_EXTRA_IDS = 100  # T5's sentinel tokens <extra_id_0..99>, appended after the SentencePiece vocabulary


def byte_unicode() -> dict[int, str]:
    """Byte-level BPE's reversible map from bytes to printable characters (the GPT-2/CLIP scheme)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def clip_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary shape: every byte alone and word-final (`</w>`), merges, then the two specials."""
    symbols = list(byte_unicode().values())
    tokens = symbols + [f"{symbol}</w>" for symbol in symbols]
    merges: list[str] = []
    for word in sorted({word for line in CORPUS for word in line.replace(",", " ").split()}):
        pieces = [*word[:-1], f"{word[-1]}</w>"]
        while len(pieces) > 1:  # merge left to right: "photo" -> "ph", "pho", ... "photo</w>"
            merged = pieces[0] + pieces[1]
            if f"{pieces[0]} {pieces[1]}" not in merges:
                merges.append(f"{pieces[0]} {pieces[1]}")
                tokens.append(merged)
            pieces = [merged, *pieces[2:]]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_clip_tokenizer(dest: Path) -> dict[str, int]:
    """Writes a CLIPTokenizer folder; returns the ids the text encoder's config must agree with."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab()
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(merge.split(" ")) for merge in merges],
        model_max_length=CLIP_MAX_LENGTH,
    )
    tokenizer.save_pretrained(str(dest))
    return {
        "vocab_size": len(vocab),
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }


def write_t5_tokenizer(dest: Path) -> dict[str, int]:
    """Writes a T5TokenizerFast folder from a SentencePiece unigram model trained here on `CORPUS`."""
    import sentencepiece
    from transformers import T5TokenizerFast

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 8),
        model_writer=model,
        vocab_size=64,
        hard_vocab_limit=False,
        model_type="unigram",
        # T5's ids: <pad> 0, </s> 1, <unk> 2, no <s>.
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    # T5's vocabulary: the SentencePiece pieces (<pad> 0, </s> 1, <unk> 2, ...), then the sentinels in
    # reverse, as transformers' T5Tokenizer lays them out.
    sentinels = [(f"<extra_id_{i}>", 0.0) for i in reversed(range(T5_EXTRA_IDS))]
    tokenizer = T5TokenizerFast(
        vocab=pieces + sentinels, extra_ids=T5_EXTRA_IDS, model_max_length=T5_MAX_LENGTH
    )
    tokenizer.save_pretrained(str(dest))
    size = len(pieces)
    return {"vocab_size": size + T5_EXTRA_IDS, "pad_token_id": 0, "eos_token_id": 1}


# Qwen2.5-VL's and Qwen3's chat markers, special tokens in both vocabularies (Qwen/Qwen-Image and
# Tongyi-MAI/Z-Image tokenizer_config.json).
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen3's chat template reduced to what one user message with a generation prompt renders: the Z-Image
# pipeline renders prompts through it (diffusers pipelines/z_image/pipeline_z_image.py, `_encode_prompt`).
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def qwen_vocab() -> tuple[dict[str, int], list[str]]:
    """Qwen's byte-level BPE shape: every byte as a symbol, merges for the corpus's words with GPT-2's
    leading-space marker `Ġ`, then the special tokens."""
    symbols = list(byte_unicode().values())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    merges: list[str] = []
    space = byte_unicode()[ord(" ")]
    for word in sorted({word for line in CORPUS for word in line.replace(",", " ").split()}):
        pieces = [space, *word]
        while len(pieces) > 1:
            merge = f"{pieces[0]} {pieces[1]}"
            if merge not in merges:
                merges.append(merge)
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
    for token in QWEN_SPECIALS:
        vocab.setdefault(token, len(vocab))
    return vocab, merges


def write_qwen_tokenizer(dest: Path, *, chat_template: str | None = None) -> dict[str, int]:
    """Writes a Qwen2Tokenizer folder (the class Qwen-Image and Z-Image ship); returns the ids the text
    encoder's config must agree with."""
    from transformers import Qwen2Tokenizer

    vocab, merges = qwen_vocab()
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=[tuple(merge.split(" ")) for merge in merges],
        additional_special_tokens=list(QWEN_SPECIALS[1:]),
        model_max_length=131072,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(str(dest))
    return {
        "vocab_size": len(vocab),
        "pad_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|im_end|>"],
    }
