"""The LoRA files AI Toolkit 27a03a91 writes for each base model other than FLUX.1: their names, tensor names
and shapes at the real models' sizes, and `ss_base_model_version`.

Module names are those the real trainer's LoRA of each tiny model carries (runpod_worker/README.md, "The
smoke"): AI Toolkit targets every Linear inside the transformer blocks (toolkit/lora_special.py:528-541 with
each model's `get_transformer_block_names`) and saves keys as `diffusion_model.<module>` for ComfyUI
(qwen_image.py:418-423, z_image.py:467-472, Wan's `convert_to_original`). Widths are the real models':
Qwen/Qwen-Image (60 blocks of 3072, MLP 12288), Tongyi-MAI/Z-Image (30 layers of 3840, feed-forward
10240, modulation from 256), Wan-AI/Wan2.2-T2V-A14B (40 blocks of 5120, FFN 13824, per expert),
Wan-AI/Wan2.2-TI2V-5B (30 blocks of 3072, FFN 14336: diffusers' scripts/convert_wan_to_diffusers.py:550-565).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

Shapes = dict[str, tuple[int, int]]


def _blocks(prefix: str, count: int, modules: dict[str, tuple[int, int]], rank: int) -> Shapes:
    shapes: Shapes = {}
    for block in range(count):
        for module, (fan_in, fan_out) in modules.items():
            shapes[f"{prefix}.{block}.{module}.lora_A.weight"] = (rank, fan_in)
            shapes[f"{prefix}.{block}.{module}.lora_B.weight"] = (fan_out, rank)
    return shapes


def qwen_image(rank: int) -> Shapes:
    d, mlp = 3072, 12288
    square = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    modules = {f"attn.{name}": (d, d) for name in square}
    for stream in ("img", "txt"):
        modules |= {f"{stream}_mlp.net.0.proj": (d, mlp), f"{stream}_mlp.net.2": (mlp, d)}
        modules[f"{stream}_mod.1"] = (d, 6 * d)
    return _blocks("diffusion_model.transformer_blocks", 60, modules, rank)


def z_image(rank: int) -> Shapes:
    d, hidden = 3840, 10240
    modules = {f"attention.{name}": (d, d) for name in ("to_q", "to_k", "to_v", "to_out.0")}
    modules |= {
        "feed_forward.w1": (d, hidden),
        "feed_forward.w2": (hidden, d),
        "feed_forward.w3": (d, hidden),
    }
    modules["adaLN_modulation.0"] = (256, 4 * d)
    return _blocks("diffusion_model.layers", 30, modules, rank)


def _wan(rank: int, d: int, ffn: int, blocks: int) -> Shapes:
    modules = {f"{attn}.{name}": (d, d) for attn in ("self_attn", "cross_attn") for name in "qkvo"}
    modules |= {"ffn.0": (d, ffn), "ffn.2": (ffn, d)}
    return _blocks("diffusion_model.blocks", blocks, modules, rank)


def wan22_expert(rank: int) -> Shapes:
    return _wan(rank, 5120, 13824, 40)


def wan22_5b(rank: int) -> Shapes:
    return _wan(rank, 3072, 14336, 30)


# model.arch -> (tensor shapes at a rank, ss_base_model_version as the model class reports it)
ARCHES: dict[str, tuple[Any, str]] = {
    "qwen_image": (qwen_image, "qwen_image"),
    "zimage": (z_image, "zimage"),
    "wan22_14b": (wan22_expert, "wan_2.2_14b"),
    "wan22_5b": (wan22_5b, "wan_2.2_5b"),
}


def lora_files(path: Path, config: dict[str, Any]) -> list[Path]:
    """Where a save at `path` lands: Wan 2.2 14B writes one file per expert unless told not to
    (extensions_built_in/diffusion_models/wan22/wan22_14b_model.py:452-493)."""
    process = config["config"]["process"][0]
    split = process["network"].get("split_multistage_loras", True)
    if process["model"].get("arch") != "wan22_14b" or not split:
        return [path]
    return [
        path.with_name(path.name.replace(".safetensors", f"_{part}.safetensors"))
        for part in ("high_noise", "low_noise")
    ]
