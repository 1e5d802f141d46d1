"""For the CPU smoke only (PYTHONPATH=runpod_worker/image/cpu_only): lets AI Toolkit import without a GPU.

AI Toolkit 27a03a91 imports every model family at start (`extensions_built_in/diffusion_models/__init__.py`
imports OmniGen2), and OmniGen2's Triton layer norm asks the GPU for its warp size while being imported
(`extensions_built_in/diffusion_models/omnigen2/src/ops/triton/layer_norm.py:46`,
`torch.cuda.get_device_properties(torch.cuda.current_device())`), which raises "Found no NVIDIA driver"
on a machine without one, before the config is even read. FLUX.1 never uses that module. On a machine
with no CUDA device, this answers those two calls with device 0 and a warp size of 32 (the value that line
falls back to), and changes nothing where a GPU is present. Production images never put this on the path.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType, SimpleNamespace
from typing import Any

NO_GPU_PROPERTIES = SimpleNamespace(
    name="no GPU (CPU smoke)", warp_size=32, total_memory=0, major=0, minor=0, multi_processor_count=1
)


def _patch(cuda: ModuleType) -> None:
    if cuda.is_available():
        return
    cuda.current_device = lambda: 0  # type: ignore[attr-defined]
    cuda.get_device_properties = lambda device=None: NO_GPU_PROPERTIES  # type: ignore[attr-defined]


class _PatchTorchCuda(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "torch.cuda":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        original = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            _patch(module)

        loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PatchTorchCuda())
