"""Learned nuclei: the U-Net's three maps → instance labels, at a fixed physical resolution.

The network (``cells.unet``) sees every image at the model's µm/px (0.5 by default, as QuPath's
H&E StarDist): inputs are resampled to it and the labels brought back to the input's grid. Large
images run in overlapping tiles whose centres are kept, so memory stays bounded and seams vanish.

Each tile can be seen turned and flipped (``PostParams.views``, up to its 8 symmetries) and the
maps averaged (probabilities, not logits): a nucleus cut in two by one view's marker is usually
whole in the others, so averaged maps split and miss fewer nuclei, at one pass per view.

Post-processing is one marker watershed at the model's resolution: markers are the connected
peaks of ``distance × (1 − boundary)`` inside the predicted foreground, flooded down that same
map within it; a piece of foreground that no marker reaches becomes a nucleus of its own. At the
input's resolution the labels are the nearest-upsampled labels clipped to the
bilinearly-upsampled foreground, so outlines follow the probability, not the coarse grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from ..dihedral import dihedral_views, undo_dihedral_view
from ..wsi.normalize import MacenkoNormalizer

__all__ = [
    "PostParams",
    "postprocess",
    "predict_maps",
    "resample",
    "labels_at",
    "model_input",
    "segment_learned",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


#: Views of new models and of manifests that name none (see docs/benchmarks.md).
DEFAULT_VIEWS = 2


@dataclass(frozen=True)
class PostParams:
    """How a model's maps become labels: views per tile and thresholds (stored in each model's manifest)."""

    foreground: float = 0.5  # nucleus probability above which a pixel is nucleus
    marker: float = 0.45  # distance × (1 − boundary) above which a pixel seeds a nucleus
    min_marker_px: int = 3  # smaller seeds are dropped (noise peaks), at model resolution
    min_area_px: int = 8  # smaller nuclei are dropped, at model resolution
    views: int = DEFAULT_VIEWS  # symmetric views of each tile averaged (1, 2, 4 or 8; see ``dihedral``)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any] | None) -> PostParams:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (obj or {}).items() if k in known})


def resample(img: np.ndarray, factor: float, nearest: bool = False) -> np.ndarray:
    """``img`` scaled by ``factor`` (area-averaged when shrinking, bilinear when enlarging)."""
    if abs(factor - 1.0) < 1e-6:
        return img
    h, w = img.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def model_input(rgb: np.ndarray, mpp: float, model_mpp: float, normaliser: MacenkoNormalizer | None) -> np.ndarray:
    """What the network sees: ``rgb`` at the model's µm/px, Macenko-normalised to the model's reference
    stain when it has one (an image whose stain cannot be estimated goes in unchanged)."""
    small = resample(rgb, mpp / model_mpp)
    return normaliser.normalize(small)[0] if normaliser is not None else small


def segment_learned(
    net: Any,
    rgb: np.ndarray,
    mpp: float,
    model_mpp: float,
    post: PostParams,
    normaliser: MacenkoNormalizer | None = None,
    cancel: Any = None,
) -> np.ndarray:
    """Instance labels of ``rgb`` (at ``mpp``) on its own grid."""
    maps = predict_maps(net, model_input(rgb, mpp, model_mpp, normaliser), cancel=cancel, views=post.views)
    lab = postprocess(maps, post)
    return labels_at(lab, _sigmoid(maps[0]), rgb.shape[:2], post.foreground)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def postprocess(maps: np.ndarray, p: PostParams = PostParams()) -> np.ndarray:
    """(H, W) int32 instance labels from (3, H, W) float maps (logit fg, logit boundary, distance)."""
    from scipy import ndimage as ndi  # heavy
    from skimage.segmentation import watershed  # heavy

    fg = _sigmoid(maps[0]) > p.foreground
    energy = np.clip(maps[2], 0.0, 1.0) * (1.0 - _sigmoid(maps[1]))
    seeds = (energy > p.marker) & fg
    markers, n = ndi.label(seeds)
    sizes = np.bincount(markers.ravel(), minlength=n + 1)
    keep = sizes >= p.min_marker_px
    keep[0] = False
    markers = np.where(keep[markers], markers, 0)
    labels = watershed(-energy, markers, mask=fg).astype(np.int32) if keep.any() else np.zeros(fg.shape, np.int32)
    # foreground that no seed reached (a faint nucleus whose distance never rose to the marker
    # threshold) is a nucleus of its own, not dropped
    orphans, n_orphans = ndi.label(fg & (labels == 0))
    if n_orphans:
        labels = np.where(orphans > 0, orphans + labels.max(), labels).astype(np.int32)
    areas = np.bincount(labels.ravel())
    small = areas < p.min_area_px
    small[0] = False
    if small.any():
        labels[small[labels]] = 0
    return _sequential(labels)


def _sequential(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def labels_at(labels: np.ndarray, fg_prob: np.ndarray, shape: tuple[int, int], threshold: float) -> np.ndarray:
    """Model-resolution labels brought to ``shape``: nearest labels within the upsampled foreground."""
    if labels.shape == tuple(shape):
        return labels
    from skimage.segmentation import expand_labels  # heavy

    size = (shape[1], shape[0])
    up = cv2.resize(labels.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int32)
    fg = cv2.resize(fg_prob.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > threshold
    grow = max(1, int(round(shape[0] / max(labels.shape[0], 1))))
    up = expand_labels(up, grow)
    up[~fg] = 0
    return _sequential(up)


def predict_maps(
    net: Any,
    rgb: np.ndarray,
    tile: int = 512,
    overlap: int = 32,
    bf16: bool | None = None,
    cancel: Any = None,
    views: int = 1,
) -> np.ndarray:
    """(3, H, W) float32 maps of ``net`` on an RGB uint8 image already at the model's resolution.

    Runs in ``tile``-px tiles overlapping by ``overlap`` px on each side; only each tile's centre
    is kept. ``views`` > 1 averages that many symmetric views of each tile (``dihedral``).
    ``bf16`` None or False runs float32, True bfloat16 autocast. ``cancel()`` → True stops
    between tiles (raises ``InterruptedError``).
    """
    import torch  # heavy

    if bf16 is None:
        bf16 = False  # measured slower than float32 for this depthwise-heavy network on AVX512-BF16/AMX CPUs
    h, w = rgb.shape[:2]
    step = tile - 2 * overlap
    out = np.zeros((3, h, w), np.float32)
    x = (rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    pad_h = max(h, tile) if h <= tile else overlap + int(np.ceil((h - overlap) / step)) * step + overlap
    pad_w = max(w, tile) if w <= tile else overlap + int(np.ceil((w - overlap) / step)) * step + overlap
    pad_h, pad_w = _mult32(pad_h), _mult32(pad_w)
    xp = np.pad(x, ((0, pad_h - h), (0, pad_w - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    if pad_h <= tile + 32 and pad_w <= tile + 32:
        boxes = [(0, 0, pad_h, pad_w)]
    else:
        boxes = [
            (y0, x0, min(y0 + tile, pad_h), min(x0 + tile, pad_w))
            for y0 in range(0, max(pad_h - 2 * overlap, 1), step)
            for x0 in range(0, max(pad_w - 2 * overlap, 1), step)
        ]
    net.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(bf16)):
        for y0, x0, y1, x1 in boxes:
            if cancel is not None and cancel():
                raise InterruptedError("cancelled")
            t = torch.from_numpy(np.ascontiguousarray(xp[y0:y1, x0:x1]))[None].permute(0, 3, 1, 2)  # channels-last
            pred = _view_mean(net, t, views)[0].numpy()
            # keep the centre: inner tiles drop ``overlap`` px on each side that has a neighbour
            cy0 = 0 if y0 == 0 else overlap
            cx0 = 0 if x0 == 0 else overlap
            cy1 = (y1 - y0) if y1 >= pad_h else (y1 - y0 - overlap)
            cx1 = (x1 - x0) if x1 >= pad_w else (x1 - x0 - overlap)
            ty0, tx0 = y0 + cy0, x0 + cx0
            ty1, tx1 = min(y0 + cy1, h), min(x0 + cx1, w)
            if ty1 > ty0 and tx1 > tx0:
                out[:, ty0:ty1, tx0:tx1] = pred[:, cy0 : cy0 + ty1 - ty0, cx0 : cx0 + tx1 - tx0]
    return out


def _view_mean(net: Any, t: Any, views: int) -> Any:
    """``net(t)`` as float32, or its mean over the first ``views`` symmetric views of ``t``, each
    brought back; logits are averaged as probabilities."""
    import torch  # heavy

    seen = dihedral_views(t, views)  # refuses a count that is not a closed set of views
    if views == 1:
        return net(t).float()
    probs = []
    for i, v in enumerate(seen):
        y = undo_dihedral_view(net(v).float(), i)
        probs.append(torch.cat([torch.sigmoid(y[:, :2]), y[:, 2:]], 1))
    mean = torch.stack(probs).mean(0)
    return torch.cat([torch.logit(mean[:, :2].clamp(1e-6, 1 - 1e-6)), mean[:, 2:]], 1)


def _mult32(n: int) -> int:
    return int(np.ceil(n / 32) * 32)
