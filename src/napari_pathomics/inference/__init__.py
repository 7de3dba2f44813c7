"""Running a bundle's model: backbones, tile reading, preprocessing, the engine, the per-slide step, Grad-CAM.

torch and timm load only when a model is first built, so importing this package stays cheap.
"""

from ..lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "PatchModel": "backbones",
        "build_model": "backbones",
        "BatchUpdate": "engine",
        "Engine": "engine",
        "InferenceRun": "engine",
        "Prediction": "engine",
        "PatchRisk": "risk_head",
        "bundle_patch_risk": "risk_head",
        "SlideRun": "analyze",
        "analyze_slide": "analyze",
        "plan_slide": "analyze",
    },
)
