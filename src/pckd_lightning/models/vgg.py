"""The CIFAR VGGs (with BN) of the CRD benchmark: vgg8, vgg11, vgg13, vgg16, vgg19.

Five conv blocks (``block0``..``block4``) separated by max-pools and a single linear ``classifier``;
the names are those of the published teachers' ``vggN_bn`` definitions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pckd_lightning.models.base import ModelOutput, ZooModel
from pckd_lightning.models.layers import global_pool, init_fan_out
from pckd_lightning.models.registry import register_model

# Output channels of the 3x3 convs of each of the five blocks.
LAYOUTS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def conv_block(in_channels: int, widths: list[int]) -> nn.Sequential:
    """conv-BN-ReLU per width, minus the last ReLU: the caller applies it, keeping the pre-activation."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(ZooModel):
    """VGG-BN for small images: no fully-connected head, global average pooling before ``classifier``.

    As in the reference, the fourth max-pool runs only for 64x64 inputs (Tiny-ImageNet), so a
    32x32 input reaches the last block at 4x4 and published checkpoints give the same logits.
    """

    def __init__(self, layout: list[list[int]], num_classes: int = 100) -> None:
        super().__init__()
        in_channels = 3
        for index, widths in enumerate(layout):
            self.add_module(f"block{index}", conv_block(in_channels, widths))
            in_channels = widths[-1]
        self.classifier = nn.Linear(in_channels, num_classes)
        self.feature_dim = in_channels
        init_fan_out(self, linear_std=0.01)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        blocks = (self.block0, self.block1, self.block2, self.block3, self.block4)
        pool_before = (False, True, True, True, x.shape[-2] == 64)
        stages: list[torch.Tensor] = []
        out = x
        for block, pool in zip(blocks, pool_before, strict=True):
            if pool:
                out = F.max_pool2d(out, kernel_size=2, stride=2)
            out = F.relu(block(out))
            stages.append(out)
        pooled = global_pool(out)
        return ModelOutput(stages=stages, pooled=pooled, logits=self.classifier(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.classifier


@register_model
def vgg8(num_classes: int = 100, **kwargs) -> VGG:
    return VGG(LAYOUTS["vgg8"], num_classes, **kwargs)


@register_model
def vgg11(num_classes: int = 100, **kwargs) -> VGG:
    return VGG(LAYOUTS["vgg11"], num_classes, **kwargs)


@register_model
def vgg13(num_classes: int = 100, **kwargs) -> VGG:
    return VGG(LAYOUTS["vgg13"], num_classes, **kwargs)


@register_model
def vgg16(num_classes: int = 100, **kwargs) -> VGG:
    return VGG(LAYOUTS["vgg16"], num_classes, **kwargs)


@register_model
def vgg19(num_classes: int = 100, **kwargs) -> VGG:
    return VGG(LAYOUTS["vgg19"], num_classes, **kwargs)
