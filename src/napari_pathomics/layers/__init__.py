"""Core objects → napari layer data tuples, with the one transform that keeps them aligned.

Qt-free: returns ``(data, kwargs, layer_type)`` tuples that napari's ``Layer.create(data, kwargs, type)``
or ``add_<type>(data, **kwargs)`` accept; colormaps are plain dicts napari turns into its own
objects. Conventions (docs/architecture.md, "Coordinates"):

* The slide image: level-0 pixel ``i`` is centred on world ``i·mpp`` µm (napari's convention).
* Geometry (ROIs, tiles) is in level-0 *corner* coordinates as GeoJSON/QuPath use them, so pixel
  ``i`` spans ``[i, i+1)``: a Shapes layer with ``scale = mpp`` and ``translate = −mpp/2`` shows
  GeoJSON coordinates exactly over the pixels they name.
* A grid whose cell covers ``s`` level-0 px from origin ``o`` gets ``scale = s·mpp`` and
  ``translate = (o + (s − 1)/2)·mpp``.

Submodules: ``base`` (roles, transforms, the slide image), ``rois`` (ROIs and QuPath objects),
``results`` (class map, heatmaps, uncertainty), ``cells`` (nuclei, the tumour proposal), ``labels``
(tile labels, suggested tiles) and ``case`` (the viewer's Qt-free case model the docks share).
Names load lazily, so opening a slide does not import the result or nuclei code.
"""

from ..lazy import lazy_exports

_BASE = (
    "UNITS LayerTuple ROLE SLIDE_PATH CELL_L0 ROLE_SLIDE ROLE_ROIS ROLE_ROIS_IMPORT ROLE_TISSUE ROLE_TILE_GRID "
    "ROLE_CLASS_MAP ROLE_RISK_MAP ROLE_ROI_HOLES ROLE_QUPATH_POINTS ROLE_QUPATH_CELLS ROLE_QUPATH_OUTLINES "
    "OUTLINE_MIN_ZOOM OUTLINE_MAX_SHAPES cam_role slide_scale "
    "slide_units slide_layer grid_transform geometry_transform world_to_level0 tissue_layer tile_grid_overlay "
    "result_meta"
)
_ROIS = (
    "annotations_to_shapes shape_to_polygon shapes_to_annotations POINT_SIZE_UM qupath_point_layers "
    "qupath_cell_layer qupath_outlines qupath_outline_layer roi_holes_layer"
)
_RESULTS = (
    "Display ROLE_UNCERTAINTY ROLE_LOW_CONFIDENCE VIEW_KEY COLORBAR_KEY SCALE_KEY VIEW_CLASSES VIEW_RISK "
    "VIEW_UNCERTAINTY VIEW_NONE CAM_SCALES view_key views class_colors class_colormap class_map_layer "
    "top_probability low_confidence_tiles low_confidence_layer class_legend risk_map_layer cam_values "
    "cam_layer uncertainty_layer result_layers tile_readout"
)
_CELLS = (
    "ROLE_NUCLEI_DENSITY ROLE_NC_RATIO ROLE_NUCLEI_OUTLINES ROLE_TUMOUR_PROPOSAL UNITS_KEY DENSITY_COLORMAP "
    "NC_COLORMAP NUCLEUS_EDGE LYMPHOCYTE_EDGE nuclei_map_layer "
    "nuclei_outlines nuclei_outline_layer proposal_layer nuclei_readout"
)

_LABELS = "ROLE_TILE_LABELS ROLE_SUGGESTIONS OUTLINE_K labels_layer suggestions_layer"
_CASE = "Case Adaptation case_of"

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        name: module
        for module, names in (
            ("base", _BASE),
            ("rois", _ROIS),
            ("results", _RESULTS),
            ("cells", _CELLS),
            ("labels", _LABELS),
            ("case", _CASE),
        )
        for name in names.split()
    },
)
