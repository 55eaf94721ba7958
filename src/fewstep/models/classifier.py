"""The evaluator: a small CNN trained by fewstep on each dataset; its penultimate layer gives FID features.

No Inception weights exist offline, so FID/KID/precision/recall are computed in this network's
128-d features (the standard MNIST-family practice). Numbers are comparable only within fewstep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fewstep.models.base import SpecModule


@dataclass
class ClassifierConfig:
    in_channels: int = 1
    image_size: int = 8
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128


class FeatureClassifier(SpecModule):
    model_type = "feature_classifier"
    Config = ClassifierConfig

    def __init__(self, cfg: ClassifierConfig):
        super().__init__(cfg)
        w = cfg.width
        layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, w, 3, padding=1), nn.GELU(),
                                   nn.Conv2d(w, 2 * w, 3, padding=1), nn.GELU()]
        if cfg.image_size >= 16:
            layers.append(nn.MaxPool2d(2))
        layers += [nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                   nn.Linear(4 * w * 16, cfg.feature_dim), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images * 2.0 - 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
