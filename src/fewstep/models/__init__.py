"""Model registry: checkpoints store {"type": name, "config": {...}} and are rebuilt from here."""

from __future__ import annotations

from fewstep.errors import FewstepError
from fewstep.models.base import SpecModule
from fewstep.models.classifier import FeatureClassifier
from fewstep.models.masked_transformer import MaskedTransformer
from fewstep.models.unet import MLPDenoiser, UNetDenoiser
from fewstep.models.vq import VQModel
from fewstep.registry import lookup

MODELS: dict[str, type[SpecModule]] = {
    MaskedTransformer.model_type: MaskedTransformer,
    VQModel.model_type: VQModel,
    FeatureClassifier.model_type: FeatureClassifier,
    UNetDenoiser.model_type: UNetDenoiser,
    MLPDenoiser.model_type: MLPDenoiser,
}


def build_model(spec: dict) -> SpecModule:
    if not isinstance(spec, dict) or "type" not in spec or "config" not in spec:
        raise FewstepError(f"network spec {spec!r} is malformed; expected {{'type': ..., 'config': {{...}}}}")
    return lookup("network type", spec["type"], MODELS).from_config_dict(spec["config"])
