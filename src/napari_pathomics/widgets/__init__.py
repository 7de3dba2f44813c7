"""napari dock widgets, reader, writer and sample data: the only package that imports napari/Qt.

Importing this package keeps ``triton`` out of the process. torch imports it lazily (through
``torch._dynamo`` when timm/torchvision load); its bundled LLVM clashes with the LLVM that Mesa
(llvmpipe, radeonsi, iris) has already loaded for napari's OpenGL canvas, and the process
segfaults. The viewer never compiles kernels, so torch simply sees no triton.
"""

from __future__ import annotations

import sys


def _keep_triton_out() -> None:
    if "triton" not in sys.modules:
        sys.modules["triton"] = None  # type: ignore[assignment]  # ImportError on `import triton`


_keep_triton_out()


def _share_main_heap() -> None:
    """Inference runs in napari worker threads: give them the main malloc arena (see
    ``model.device.tune_allocator``) before those threads exist."""
    from ..model.device import tune_allocator

    tune_allocator()


_share_main_heap()
