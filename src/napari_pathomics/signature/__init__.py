"""Prognostic pathomics signature (Qt-free): patient features, LASSO-Cox, cutoff, scoring.

Typical use::

    from napari_pathomics.signature import Signature
    sig = Signature.from_json(bundle_dir)              # or a signature.json / dict
    result = sig.score_tiles([slide_results, ...])     # or sig.score({"tme_mean_STR": ...})

and for training, :class:`SignatureFitter` on a per-patient table.
"""

from .cox import FrozenCox
from .cutoff import CutoffResult, find_cutoff
from .evaluate import concordance, hazard_ratio, km_by_group, percentile, time_dependent_auc
from .features import FeatureSpec, SlideTiles, combine_slides, slide_tme, tcga_feature_spec
from .fit import SignatureFitter, cox_patch_risk_weights, validate_survival
from .model import SCHEMA_VERSION, SIGNATURE_KIND, SURVIVAL_MODELS, Signature, SignatureScore, SurvivalModel

__all__ = [
    "CutoffResult",
    "FeatureSpec",
    "FrozenCox",
    "SCHEMA_VERSION",
    "SIGNATURE_KIND",
    "Signature",
    "SignatureFitter",
    "SignatureScore",
    "SURVIVAL_MODELS",
    "SurvivalModel",
    "SlideTiles",
    "combine_slides",
    "concordance",
    "find_cutoff",
    "hazard_ratio",
    "km_by_group",
    "cox_patch_risk_weights",
    "percentile",
    "slide_tme",
    "tcga_feature_spec",
    "time_dependent_auc",
    "validate_survival",
]
