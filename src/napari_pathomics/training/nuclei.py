"""Train the learned nuclei U-Net on instance-labelled H&E images (``pathomics train-nuclei``).

Every image is seen at the model's µm/px: each training crop is cut at a random scale around
it (±25 %, so the network tolerates a wrong or rounded slide µm/px), flipped and turned, then
coloured with a heavy HED stain jitter (Tellez et al.'s "HED-strong" and beyond) plus
brightness/contrast/saturation/blur, because the stain of the user's slides is the largest gap
between a small training set and real use. Targets come from the instance labels of the crop:
foreground, the inner rim of each nucleus, and each nucleus' distance transform scaled to 1.

Loss: BCE + soft Dice on the foreground, BCE on the rim, MSE on the distance. ``pale_weight``
can make pale nuclei (haematoxylin below the image's typical nucleus) weigh more in every term;
it is off by default because it moved no cross-validated figure on MoNuSeg. What is validated
and exported is an exponential moving average of the weights, steadier than any single epoch
of a small training set.

Checkpoints are safetensors files written atomically after every epoch (weights, their average,
optimiser moments, progress), so a killed run resumes where the last epoch ended.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_json
from ..cells.learned import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PostParams,
    labels_at,
    model_input,
    postprocess,
    predict_maps,
    segment_learned,
)
from ..cells.metrics import aji, dice
from ..cells.model_folder import write_model_folder
from ..cells.stain import haematoxylin
from ..cells.unet import DEFAULT_DECODER, DEFAULT_ENCODER, OUTPUTS, build_unet
from ..wsi.normalize import MacenkoNormalizer
from ._pretrained import load_imagenet_efficientnet_lite0

__all__ = [
    "TrainConfig",
    "Sample",
    "train_nuclei",
    "targets_of",
    "augment_pair",
    "new_network",
    "evaluate",
    "reference_stain",
    "split_by_image",
    "export_model",
    "tune_post",
    "TUNE_MIN_IMAGES",
]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that changes a training run (recorded in the model's manifest)."""

    mpp: float = 0.5  # the model's resolution
    epochs: int = 40
    steps_per_epoch: int = 50
    batch: int = 8
    crop: int = 112
    lr: float = 2e-3
    weight_decay: float = 1e-4
    scale_jitter: float = 0.25
    hed_sigma: float = 0.2
    hed_bias: float = 0.05
    pale_weight: float = 0.0
    boundary_weight: float = 1.0
    distance_weight: float = 2.0
    pretrained: bool = True
    encoder: str = DEFAULT_ENCODER
    decoder: tuple[int, ...] = DEFAULT_DECODER
    seed: int = 0
    bf16: bool = True
    val_fraction: float = 0.15
    normalise: bool = True  # Macenko-normalise every image to the training set's reference stain
    ema: float = 0.99  # decay of the weights' moving average, which is validated and exported (0: the raw weights)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Sample:
    """One labelled image: RGB uint8, int32 instance labels (same size) and its µm/px."""

    name: str
    rgb: np.ndarray
    labels: np.ndarray
    mpp: float
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- targets and augmentation


def targets_of(labels: np.ndarray, h: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Foreground, inner rim, scaled distance and pale weight (all float32, shape of ``labels``)."""
    from scipy import ndimage as ndi  # heavy
    from skimage.segmentation import find_boundaries  # heavy

    fg = (labels > 0).astype(np.float32)
    rim = find_boundaries(labels, mode="inner").astype(np.float32) * fg
    dist = np.zeros(labels.shape, np.float32)
    pale = np.zeros(labels.shape, np.float32)
    objs = ndi.find_objects(labels)
    means = {}
    for i, sl in enumerate(objs, start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        m = labels[sl] == i
        d = ndi.distance_transform_edt(m)
        mx = float(d.max())
        if mx > 0:
            dist[sl][m] = (d[m] / mx).astype(np.float32)
        if h is not None:
            means[i] = (sl, m, float(h[sl][m].mean()))
    if means:
        ref = float(np.median([v[2] for v in means.values()]))
        for sl, m, hm in means.values():
            pale[sl][m] = float(np.clip(1.0 - hm / max(ref, 1e-6), 0.0, 1.0))
    return fg, rim, dist, pale


def _hed_jitter(img: np.ndarray, rng: np.random.Generator, sigma: float, bias: float) -> np.ndarray:
    from skimage.color import hed_from_rgb, rgb_from_hed  # heavy

    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-bias, bias, size=3)
    od = -np.log(np.maximum(img.reshape(-1, 3).astype(np.float32), 1.0) / 255.0)
    m = (hed_from_rgb * alpha[None, :]) @ rgb_from_hed
    od2 = od @ m.astype(np.float32) + (beta @ rgb_from_hed).astype(np.float32)
    return (np.exp(-np.maximum(od2, 0.0)) * 255.0).reshape(img.shape)


def augment_pair(
    s: Sample, crop: int, rng: np.random.Generator, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One training view: (crop, crop, 3) float32 RGB 0-255, (crop, crop) int32 labels, pale weight."""
    scale = (s.mpp / cfg.mpp) * math.exp(rng.uniform(-1, 1) * math.log(1 + cfg.scale_jitter))
    src = int(math.ceil(crop / scale))
    h, w = s.labels.shape
    img, lab = s.rgb, s.labels
    if h < src or w < src:
        ph, pw = max(0, src - h), max(0, src - w)
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        lab = np.pad(lab, ((0, ph), (0, pw)), mode="constant")
        h, w = lab.shape
    y0 = int(rng.integers(0, h - src + 1))
    x0 = int(rng.integers(0, w - src + 1))
    im = cv2.resize(img[y0 : y0 + src, x0 : x0 + src], (crop, crop), interpolation=cv2.INTER_AREA)
    lb = cv2.resize(lab[y0 : y0 + src, x0 : x0 + src].astype(np.float32), (crop, crop), interpolation=cv2.INTER_NEAREST)
    lb = lb.astype(np.int32)
    k = int(rng.integers(0, 4))
    im, lb = np.rot90(im, k), np.rot90(lb, k)
    if rng.random() < 0.5:
        im, lb = im[:, ::-1], lb[:, ::-1]
    im, lb = np.ascontiguousarray(im), np.ascontiguousarray(lb)
    h_chan = haematoxylin(im)
    f = _hed_jitter(im, rng, cfg.hed_sigma, cfg.hed_bias)
    f *= rng.uniform(0.85, 1.15)
    mean = f.mean()
    f = (f - mean) * rng.uniform(0.8, 1.2) + mean
    gray = f.mean(axis=2, keepdims=True)
    f = (f - gray) * rng.uniform(0.6, 1.4) + gray
    if rng.random() < 0.3:
        sig = rng.uniform(0.3, 1.2)
        f = cv2.GaussianBlur(f, (0, 0), sig)
    return np.clip(f, 0, 255).astype(np.float32), lb, h_chan


def _batch(samples: Sequence[Sample], probs: np.ndarray, rng: np.random.Generator, cfg: TrainConfig) -> tuple:
    import torch  # heavy

    xs, ys = [], []
    for _ in range(cfg.batch):
        s = samples[int(rng.choice(len(samples), p=probs))]
        im, lb, hc = augment_pair(s, cfg.crop, rng, cfg)
        fg, rim, dist, pale = targets_of(lb, hc)
        xs.append(((im / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
        ys.append(np.stack([fg, rim, dist, pale]))
    return torch.from_numpy(np.stack(xs).astype(np.float32)), torch.from_numpy(np.stack(ys).astype(np.float32))


def _loss(pred: Any, y: Any, cfg: TrainConfig) -> Any:
    import torch  # heavy
    from torch.nn import functional as F  # heavy

    pred = pred.float()
    fg, rim, dist, pale = y[:, 0], y[:, 1], y[:, 2], y[:, 3]
    w = 1.0 + cfg.pale_weight * pale
    bce = (F.binary_cross_entropy_with_logits(pred[:, 0], fg, reduction="none") * w).mean()
    p = torch.sigmoid(pred[:, 0])
    inter = (p * fg * w).sum()
    sdice = 1 - (2 * inter + 1) / ((p * w).sum() + (fg * w).sum() + 1)
    rim_l = (F.binary_cross_entropy_with_logits(pred[:, 1], rim, reduction="none") * w).mean()
    dist_l = (((pred[:, 2] - dist) ** 2) * (0.2 + fg) * w).mean()
    return bce + sdice + cfg.boundary_weight * rim_l + cfg.distance_weight * dist_l


# ---------------------------------------------------------------- evaluation


def evaluate(
    net: Any, samples: Sequence[Sample], mpp: float, post: PostParams | None = None, normaliser: Any = None
) -> dict[str, float]:
    """Mean pixel Dice and AJI of ``net`` on ``samples`` (raw images, at their own resolution)."""
    post = post or PostParams()
    ds, aj = [], []
    for s in samples:
        lab = segment_learned(net, s.rgb, s.mpp, mpp, post, normaliser)
        ds.append(dice(s.labels, lab))
        aj.append(aji(s.labels, lab))
    return {"dice": float(np.mean(ds)) if ds else float("nan"), "aji": float(np.mean(aj)) if aj else float("nan")}


def reference_stain(samples: Sequence[Sample], max_px: int = 2_000_000) -> MacenkoNormalizer | None:
    """The Macenko stain of the training images pooled (None when it cannot be estimated)."""
    rng = np.random.default_rng(0)
    px = np.concatenate([s.rgb.reshape(-1, 3) for s in samples])
    if len(px) > max_px:
        px = px[rng.choice(len(px), max_px, replace=False)]
    try:
        return MacenkoNormalizer.from_image(np.ascontiguousarray(px[None]))
    except ValueError:
        return None


def _normalised(samples: Sequence[Sample], norm: MacenkoNormalizer | None) -> list[Sample]:
    if norm is None:
        return list(samples)
    return [Sample(s.name, norm.normalize(s.rgb)[0], s.labels, s.mpp, s.meta) for s in samples]


# ---------------------------------------------------------------- checkpoints


def _save_checkpoint(path: Path, net: Any, opt: Any, state: dict[str, Any], ema: dict[str, Any] | None = None) -> None:
    import torch  # heavy
    from safetensors.torch import save  # heavy

    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    for k, v in (ema or {}).items():
        tensors[f"ema.{k}"] = v.detach().contiguous().clone()
    for pid, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{pid}.{k}"] = v.detach().contiguous().clone().reshape(v.shape if v.dim() else (1,))
    meta = {"state": json.dumps(state)}
    atomic_write_bytes(path, save(tensors, metadata=meta))


def _load_checkpoint(path: Path, net: Any, opt: Any, ema: dict[str, Any] | None = None) -> dict[str, Any]:
    from safetensors import safe_open  # heavy

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema is not None:
        ema.update({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    sd = opt.state_dict()
    for key, v in tensors.items():
        if not key.startswith("opt."):
            continue
        _, pid, name = key.split(".", 2)
        st = sd["state"].setdefault(int(pid), {})
        st[name] = v.reshape(()) if name == "step" else v
    opt.load_state_dict(sd)
    return json.loads(meta.get("state", "{}"))


def _ema_update(ema: dict[str, Any], net: Any, decay: float) -> None:
    import torch  # heavy

    with torch.no_grad():
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
            else:
                ema[k].copy_(v)


def _with_weights(net: Any, ema: dict[str, Any] | None) -> Any:
    """``net`` itself, or a copy carrying the averaged weights."""
    if ema is None:
        return net
    avg = copy.deepcopy(net)
    avg.load_state_dict(ema)
    return avg


def split_by_image(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples, whole images apart (at least one of each when possible)."""
    n = len(samples)
    if n < 2 or fraction <= 0:
        return list(samples), []
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    val = {int(i) for i in order[:n_val]}
    return [s for i, s in enumerate(samples) if i not in val], [s for i, s in enumerate(samples) if i in val]


def new_network(cfg: TrainConfig) -> Any:
    """The U-Net, with an ImageNet encoder when ``cfg.pretrained`` (needs the train extra)."""
    net = build_unet(cfg.encoder, tuple(cfg.decoder))
    if cfg.pretrained:
        import timm  # heavy: torch

        full = timm.create_model(cfg.encoder, pretrained=False)
        load_imagenet_efficientnet_lite0(full)
        missing = net.encoder.load_state_dict(full.state_dict(), strict=False)
        if len(missing.missing_keys):
            raise RuntimeError(f"encoder keys not found in the ImageNet weights: {missing.missing_keys[:3]}")
    return net


def train_nuclei(
    samples: Sequence[Sample],
    workdir: str | Path,
    cfg: TrainConfig = TrainConfig(),
    val: Sequence[Sample] | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train (or resume from ``workdir/checkpoint.safetensors``); returns the best network and its record.

    ``progress(step, total, figures)`` is called after every step. The best epoch on the
    validation images (AJI; the last epoch when there is no validation image) is kept in
    ``workdir/best.safetensors``.
    """
    import torch  # heavy

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if val is None:
        train, val = split_by_image(samples, cfg.val_fraction, cfg.seed)
    else:
        train = list(samples)
    if not train:
        raise ValueError("no training images")
    net = new_network(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    ck = workdir / "checkpoint.safetensors"
    state: dict[str, Any] = {"epoch": 0, "best": -1.0, "history": [], "config": cfg.to_json()}
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()} if cfg.ema > 0 else None
    if ck.exists():
        state = _load_checkpoint(ck, net, opt, ema)
        same = {k: v for k, v in state.get("config", {}).items() if k != "epochs"}
        if same != {k: v for k, v in cfg.to_json().items() if k != "epochs"}:
            raise ValueError(f"{ck} was written by a run with other settings; use another --out or delete the folder")
        state["config"] = cfg.to_json()
        if log:
            log(f"resuming after epoch {state['epoch']} of {cfg.epochs}")
    norm = reference_stain(train) if cfg.normalise else None
    if norm is not None:
        state["stain_reference"] = norm.to_dict()
    train = _normalised(train, norm)
    areas = np.array([s.labels.size * (s.mpp / cfg.mpp) ** 2 for s in train], np.float64)
    probs = areas / areas.sum()
    t0 = time.time()
    for epoch in range(int(state["epoch"]), cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        net.train()
        losses = []
        for step in range(cfg.steps_per_epoch):
            it = epoch * cfg.steps_per_epoch + step
            lr = cfg.lr * min(1.0, (it + 1) / 50) * 0.5 * (1 + math.cos(math.pi * it / total))
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = _batch(train, probs, rng, cfg)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                pred = net(x)
            loss = _loss(pred, y, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if ema is not None:
                _ema_update(ema, net, min(cfg.ema, (1 + it) / (10 + it)))
            if progress:
                progress(it + 1, total, {"loss": float(np.mean(losses[-20:]))})
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "seconds": time.time() - t0}
        judged = _with_weights(net, ema)
        if val:
            rec.update({f"val_{k}": v for k, v in evaluate(judged, val, cfg.mpp, normaliser=norm).items()})
        score = rec.get("val_aji", float(epoch))
        state["history"].append(rec)
        state["epoch"] = epoch + 1
        if score >= state["best"]:
            state["best"] = score
            state["best_epoch"] = epoch + 1
            _save_checkpoint(workdir / "best.safetensors", judged, opt, state)
        _save_checkpoint(ck, net, opt, state, ema)
        atomic_write_json(workdir / "history.json", state["history"])
        if log:
            log(json.dumps(rec))
    best = workdir / "best.safetensors"
    if best.exists():
        _load_checkpoint(best, net, torch.optim.AdamW(net.parameters()))
    net.eval()
    return net, state


def export_model(
    net: Any,
    out: str | Path,
    cfg: TrainConfig,
    state: dict[str, Any],
    *,
    name: str,
    licence: str,
    attribution: str = "",
    data: dict[str, Any] | None = None,
    figures: dict[str, Any] | None = None,
    post: PostParams | None = None,
    readme: str = "",
) -> Path:
    """Write ``net`` as a nuclei model folder (``cells.model_folder``) recording how it was made."""
    post = post or PostParams()
    manifest = {
        "name": name,
        "licence": licence,
        "attribution": attribution,
        "architecture": {
            "family": "unet",
            "encoder": cfg.encoder,
            "decoder": list(cfg.decoder),
            "outputs": list(OUTPUTS),
        },
        "mpp": cfg.mpp,
        "post": post.to_json(),
        "stain_reference": state.get("stain_reference"),
        "input": {"mean": IMAGENET_MEAN.tolist(), "std": IMAGENET_STD.tolist(), "colour": "RGB"},
        "training": {
            "data": data or {},
            "config": cfg.to_json(),
            "best_epoch": state.get("best_epoch"),
            "history": state.get("history", []),
            "validation_run": state.get("validation_run"),
        },
        "figures": figures or {},
    }
    text = readme or f"# Nuclei model `{name}`\n\nLicence: {licence}\n\n{attribution}\n"
    return write_model_folder(out, net.state_dict(), manifest, text)


#: Fewer validation images than this keep the default post-processing: thresholds tuned on a single
#: image fit it and cost AJI on unseen ones (docs/benchmarks.md); three is a floor, not a tuned value.
TUNE_MIN_IMAGES = 3


def tune_post(
    net: Any, samples: Sequence[Sample], mpp: float, normaliser: Any = None
) -> tuple[PostParams, dict[str, float]]:
    """The post-processing thresholds with the best mean AJI on ``samples`` (maps computed once), and
    their figures; the defaults, with their figures, when there are fewer than ``TUNE_MIN_IMAGES``."""
    maps = []
    for s in samples:
        m = predict_maps(net, model_input(s.rgb, s.mpp, mpp, normaliser), views=PostParams().views)
        maps.append((s, m, 1.0 / (1.0 + np.exp(-m[0]))))
    grid = [PostParams()]
    if len(samples) >= TUNE_MIN_IMAGES:
        grid += [PostParams(foreground=f, marker=mk) for f in (0.4, 0.5, 0.6) for mk in (0.3, 0.4, 0.5, 0.6)]
    best: tuple[float, PostParams, dict[str, float]] = (-1.0, PostParams(), {})
    for p in grid:
        ds, aj = [], []
        for s, m, fgp in maps:
            lab = labels_at(postprocess(m, p), fgp, s.labels.shape, p.foreground)
            ds.append(dice(s.labels, lab))
            aj.append(aji(s.labels, lab))
        score = float(np.mean(aj))
        if score > best[0]:
            best = (score, p, {"dice": float(np.mean(ds)), "aji": score})
    return best[1], best[2]
