"""Backbone features of a slide's tiles (cached), and the patch risk head that uses them.

The seed study's patch model sees tiles from the ROIs (or tissue), Macenko-normalised and
z-scored, and its risk head works on the backbone's pooled features (timm
``forward_head(forward_features(x), pre_logits=True)``). Tiles are planned and preprocessed
exactly as the engine does (same grid, same background rule, same ``preprocess_batch``), and one
forward pass gives both the embedding and the class probabilities.

Embeddings are cached per slide fingerprint × backbone × grid (``*.emb.npz``, atomic writes), so
a re-run of ``train-signature`` with other horizons or seeds costs no inference. The backbone key
hashes the weights and preprocessing only, so a bundle derived by ``train-signature`` (same
backbone, new head and signature) reuses the cache of its base bundle.

A bundle with a risk head declares it in its manifest::

    "risk_head": {"weights": "risk_head.safetensors", "input": "pre_logits", "dim": D,
                  "definition": "sigmoid(((emb - mean) / scale) · weight + bias)", ...}

and ``risk_head.safetensors`` holds ``weight (D,)``, ``bias (1,)``, ``mean (D,)``, ``scale (D,)``.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import BundleError, CohortError

if TYPE_CHECKING:  # pragma: no cover
    from ..model.bundle import Bundle
    from ..results import TileResults
    from ..slide import Slide

RISK_HEAD_FILE = "risk_head.safetensors"
EMB_FORMAT = 1


def backbone_key(bundle: "Bundle") -> str:
    """Identity of what produces the embeddings: weights, architecture, preprocessing, tiling."""
    m = bundle.manifest["model"]
    blob = json.dumps([bundle.file_hashes.get(m["weights"]), m["architecture"], m["input_size"], m["tile_um"],
                       m["mpp"], m["normalization"]], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def embed_batch(engine: Any, x: Any) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (B, D) float32, class probabilities (B, C) float32) of a preprocessed batch."""
    import torch

    from ..model.device import autocast

    model = engine.model
    with torch.inference_mode(), autocast(engine.device, engine.amp.dtype):
        feats = model.forward_features(x.to(engine.device))
        pre = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    emb = pre.float().reshape(pre.shape[0], -1).cpu().numpy()
    probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return emb.astype(np.float32), probs.astype(np.float32)


def _read_batch(slide: "Slide", grid: Any, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = grid.tile_px
    origins = grid.origins
    tiles = np.empty((idx.size, px, px, 3), dtype=np.uint8)
    failed = np.zeros(idx.size, dtype=bool)
    for j, i in enumerate(idx):
        try:
            tiles[j] = slide.read_tile((int(origins[i, 0]), int(origins[i, 1])), grid.tile_size_l0, px)
        except Exception:  # noqa: BLE001 - a region that fails to decode drops that tile
            failed[j] = True
    return tiles, failed


@dataclass
class SlideEmbeddings:
    """Kept tiles of one slide: lattice position, class probabilities, backbone embedding."""

    cols: np.ndarray
    rows: np.ndarray
    probs: np.ndarray  # (N, C) float32
    emb: np.ndarray  # (N, D) float32
    n_grid: int  # tiles planned (kept + background + failed)
    n_failed: int
    class_names: list[str]

    def to_bytes(self, meta: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, cols=self.cols, rows=self.rows, probs=self.probs, emb=self.emb,
                 meta_json=np.array(json.dumps({**meta, "format": EMB_FORMAT, "n_grid": self.n_grid,
                                                "n_failed": self.n_failed, "class_names": self.class_names})))
        return buf.getvalue()

    @classmethod
    def load(cls, path: Path) -> tuple["SlideEmbeddings", dict[str, Any]]:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta_json"]))
            if meta.get("format") != EMB_FORMAT:
                raise ValueError("embedding cache of another format")
            return cls(z["cols"], z["rows"], z["probs"], z["emb"], int(meta["n_grid"]), int(meta["n_failed"]),
                       list(meta["class_names"])), meta


def extract_slide(engine: Any, slide_path: str | Path, roi_path: str | Path | None = None,
                  cache_dir: str | Path | None = None, no_tissue: bool = False,
                  min_tissue: float | None = None) -> SlideEmbeddings:
    """Embeddings and probabilities of a slide's ROI ∩ tissue tiles (cached when ``cache_dir``)."""
    from ..annotations import read_geojson
    from ..model.engine import plan_for_bundle, tissue_fraction
    from ..model.preprocess import preprocess_batch
    from ..slide import open_slide
    from .batch import _roi_hash, file_fingerprint

    bundle = engine.bundle
    with open_slide(slide_path) as slide:
        rois = read_geojson(roi_path, bounds=slide.dimensions).annotations if roi_path else None
        grid = plan_for_bundle(slide, bundle, rois, tissue=False if no_tissue else None, min_tissue=min_tissue)
        if len(grid) == 0:
            raise CohortError(f"{Path(slide_path).name}: no tiles in the ROIs/tissue")
        meta = {"slide_fingerprint": file_fingerprint(slide_path), "backbone": backbone_key(bundle),
                "grid_key": grid.key(), "roi": _roi_hash(str(roi_path) if roi_path else None),
                "amp": engine.amp.name, "min_tile_tissue": engine.min_tile_tissue}
        cache = None
        if cache_dir is not None:
            tag = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
            cache = Path(cache_dir) / f"{meta['slide_fingerprint'][:16]}-{meta['backbone']}-{tag}.emb.npz"
            if cache.is_file():
                try:
                    se, m = SlideEmbeddings.load(cache)
                    if all(m.get(k) == v for k, v in meta.items()):
                        return se
                except (OSError, ValueError, KeyError):
                    pass
        keep_cols, keep_rows, probs_l, emb_l = [], [], [], []
        n_failed = 0
        bs = engine.batch_size
        for s in range(0, len(grid), bs):
            idx = np.arange(s, min(len(grid), s + bs))
            tiles, failed = _read_batch(slide, grid, idx)
            n_failed += int(failed.sum())
            keep = ~failed & (tissue_fraction(tiles) >= engine.min_tile_tissue)
            if not keep.any():
                continue
            x = preprocess_batch(tiles[keep], bundle)
            emb, probs = embed_batch(engine, x)
            keep_cols.append(grid.cols[idx[keep]])
            keep_rows.append(grid.rows[idx[keep]])
            probs_l.append(probs)
            emb_l.append(emb)
    if not probs_l:
        raise CohortError(f"{Path(slide_path).name}: every tile is background or failed to decode")
    se = SlideEmbeddings(np.concatenate(keep_cols), np.concatenate(keep_rows), np.concatenate(probs_l),
                         np.concatenate(emb_l), len(grid), n_failed, list(bundle.class_names))
    if cache is not None:
        atomic_write_bytes(cache, se.to_bytes(meta))
    return se


# ---------------------------------------------------------------------------------------------
@dataclass
class RiskHead:
    """Logistic patch-risk head on standardised backbone embeddings."""

    weight: np.ndarray  # (D,)
    bias: float
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)

    def predict(self, emb: np.ndarray) -> np.ndarray:
        """Patch risk in [0, 1] (probability of the 'poor' label) per tile."""
        z = (np.asarray(emb, dtype=np.float64) - self.mean) / self.scale
        return (1.0 / (1.0 + np.exp(-(z @ self.weight + self.bias)))).astype(np.float32)

    def tensors(self) -> dict[str, Any]:
        import torch

        return {"weight": torch.tensor(self.weight, dtype=torch.float64),
                "bias": torch.tensor([self.bias], dtype=torch.float64),
                "mean": torch.tensor(self.mean, dtype=torch.float64),
                "scale": torch.tensor(self.scale, dtype=torch.float64)}

    def to_safetensors(self) -> bytes:
        from safetensors.torch import save

        return save(self.tensors())


def load_risk_head(bundle: "Bundle") -> RiskHead | None:
    """The bundle's risk head (None if it declares none); BundleError if declared but unusable."""
    spec = bundle.manifest.get("risk_head")
    if not isinstance(spec, dict):
        return None
    name = spec.get("weights", RISK_HEAD_FILE)
    if name not in bundle.file_hashes:
        raise BundleError(f"risk_head.weights {name!r} is not listed in the bundle's files")
    from safetensors.numpy import load_file

    try:
        t = load_file(str(bundle.path / name))
        head = RiskHead(t["weight"].astype(np.float64), float(t["bias"].reshape(-1)[0]),
                        t["mean"].astype(np.float64), t["scale"].astype(np.float64))
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"{name}: unreadable risk head ({exc})") from None
    if not (head.weight.shape == head.mean.shape == head.scale.shape) or head.weight.ndim != 1:
        raise BundleError(f"{name}: risk head arrays have inconsistent shapes")
    return head


def apply_risk_head(res: "TileResults", slide: "Slide", engine: Any) -> None:
    """Replace the engine's per-tile risk of done tiles by the bundle's risk head (second pass)."""
    from ..model.preprocess import preprocess_batch
    from ..results import DONE

    head = load_risk_head(engine.bundle)
    if head is None:
        raise BundleError("the bundle declares no risk head")
    done = np.flatnonzero(res.status == DONE)
    bs = engine.batch_size
    from ..tiling import TileGrid

    grid = TileGrid(cols=res.cols, rows=res.rows, tile_size_l0=res.tile_size_l0, tile_um=engine.bundle.tile_um,
                    mpp=engine.bundle.mpp, slide_width=slide.width, slide_height=slide.height,
                    coverage=np.ones(len(res), dtype=np.float32))
    for s in range(0, done.size, bs):
        idx = done[s:s + bs]
        tiles, failed = _read_batch(slide, grid, idx)
        if failed.any():
            raise CohortError(f"{slide.path.name}: tiles failed to decode in the risk-head pass")
        emb, _ = embed_batch(engine, preprocess_batch(tiles, engine.bundle))
        res.risk[idx] = head.predict(emb)
