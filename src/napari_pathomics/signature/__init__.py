"""Prognostic pathomics signature (Qt-free): patient features, LASSO-Cox, cutoff, scoring.

Typical use::

    from napari_pathomics.signature import Signature
    sig = Signature.from_json(bundle_dir)              # or a signature.json / dict
    result = sig.score(sig.feature_spec.transform([slide_tiles, ...]))  # or sig.score({"tme_mean_STR": ...})

(``scoring.score_tiles`` makes those two calls from tile results, for every command and dock),

and for training, :class:`SignatureFitter` on a per-patient table.
"""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "FrozenCox": "cox",
        "CutoffResult": "_cutoff",
        "find_cutoff": "_cutoff",
        "concordance": "_evaluate",
        "hazard_ratio": "_evaluate",
        "km_by_group": "_evaluate",
        "percentile": "_evaluate",
        "time_dependent_auc": "_evaluate",
        "FeatureSpec": "features",
        "SlideTiles": "features",
        "combine_slides": "features",
        "slide_tme": "features",
        "tcga_feature_spec": "features",
        "SignatureFitter": "fit",
        "cox_patch_risk_weights": "fit",
        "validate_survival": "fit",
        "SCHEMA_VERSION": "model",
        "SIGNATURE_KIND": "model",
        "SURVIVAL_MODELS": "model",
        "Signature": "model",
        "SignatureScore": "model",
        "SurvivalModel": "model",
        "ClinicalSpec": "clinical",
        "Covariate": "clinical",
        "parse_clinical": "clinical",
        "CombinedScore": "combined",
        "score_combined": "combined",
        "model_c_indices": "combined",
        "fit_combined": "_compare",
        "bootstrap_delta_c": "_compare",
        "likelihood_ratio_test": "_compare",
    },
)
