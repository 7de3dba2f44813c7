"""Running a bundle's model: backbones, tile reading, preprocessing, the engine, Grad-CAM.

torch and timm load only when a model is first built, so importing this package stays cheap.
"""

from .backbones import PatchModel, build_model
from .engine import BatchUpdate, Engine, InferenceRun, Prediction

__all__ = ["BatchUpdate", "Engine", "InferenceRun", "PatchModel", "Prediction", "build_model"]
