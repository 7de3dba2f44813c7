"""Cells from H&E: nuclei segmentation, per-nucleus and per-tile features, slide runs, exports.

Qt-free and torch-free. ``nuclei`` segments (haematoxylin, adaptive foreground, split touching
nuclei), ``features`` measures (area, perimeter, shape, haematoxylin, cell estimate, N:C ratio),
``run`` goes over a slide's ROI tiles on the engine's lattice with progress, cancel and a cache,
``export`` writes QuPath GeoJSON and CSV tables.
"""
