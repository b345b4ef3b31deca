"""ImageNet models as subclasses of torchvision's, so torchvision weight files load with ``strict=True``.

Only features are added: the modules, and hence the state-dict keys, are torchvision's own. Nothing
is downloaded; load weights with ``model.load_state_dict(torch.load(path))``.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenetv2, resnet

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import global_pool
from pckd_lightning.models.registry import register_model


class TorchvisionResNet(ZooModel, resnet.ResNet):
    """torchvision's ResNet; stages are the stem (after ReLU, before the max-pool) and layer1..4."""

    def __init__(
        self,
        block: type[resnet.BasicBlock | resnet.Bottleneck],
        layers: list[int],
        num_classes: int,
        **kwargs,
    ) -> None:
        super().__init__(block, layers, num_classes=num_classes, **kwargs)
        self.feature_dim = self.fc.in_features

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = [self.relu(self.bn1(self.conv1(x)))]
        out = self.maxpool(stages[0])
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            out = layer(out)
            stages.append(out)
        pooled = global_pool(out)
        return ModelOutput(stages=stages, pooled=pooled, logits=self.fc(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.fc


class TorchvisionMobileNetV2(ZooModel, mobilenetv2.MobileNetV2):
    """torchvision's MobileNetV2; stages are the stem and the last block at each resolution
    (channels 32, 24, 32, 96, 320 at width 1), as in the CIFAR MobileNetV2's features.
    """

    # Indices into ``features`` whose outputs are reported as stages.
    STAGE_ENDS = (0, 3, 6, 13, 17)

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(num_classes=num_classes, **kwargs)
        self.feature_dim = self.classifier_layer.in_features

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        stages = []
        out = x
        for index, module in enumerate(self.features):
            out = module(out)
            if index in self.STAGE_ENDS:
                stages.append(out)
        pooled = global_pool(out)
        return ModelOutput(stages=stages, pooled=pooled, logits=self.classifier(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.classifier[-1]


@register_model
def imagenet_resnet18(num_classes: int = 100, **kwargs) -> TorchvisionResNet:
    return TorchvisionResNet(resnet.BasicBlock, [2, 2, 2, 2], num_classes, **kwargs)


@register_model
def imagenet_resnet34(num_classes: int = 100, **kwargs) -> TorchvisionResNet:
    return TorchvisionResNet(resnet.BasicBlock, [3, 4, 6, 3], num_classes, **kwargs)


@register_model
def imagenet_resnet50(num_classes: int = 100, **kwargs) -> TorchvisionResNet:
    return TorchvisionResNet(resnet.Bottleneck, [3, 4, 6, 3], num_classes, **kwargs)


@register_model
def imagenet_mobilenet_v2(num_classes: int = 100, **kwargs) -> TorchvisionMobileNetV2:
    return TorchvisionMobileNetV2(num_classes, **kwargs)
