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
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import CohortError

if TYPE_CHECKING:  # pragma: no cover
    from ..model.bundle import Bundle
    from ..slide import Slide

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
                except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, RecursionError,
                        zipfile.BadZipFile):  # a torn/empty cache file is recomputed, not fatal
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
