"""The model zoo: every architecture registers itself on import, so ``create_model(name)`` sees them all."""

from pckd_lightning.models import (
    cifar_resnet,
    mobilenetv2,
    resnet_v2,
    shufflenetv1,
    shufflenetv2,
    torchvision_models,
    vgg,
    wide_resnet,
)
from pckd_lightning.models.base import ModelOutput, WeightsFile, ZooModel
from pckd_lightning.models.registry import create_model, list_models, register_model, unregister_model

__all__ = [
    "ModelOutput",
    "WeightsFile",
    "ZooModel",
    "cifar_resnet",
    "create_model",
    "list_models",
    "mobilenetv2",
    "register_model",
    "resnet_v2",
    "shufflenetv1",
    "shufflenetv2",
    "torchvision_models",
    "unregister_model",
    "vgg",
    "wide_resnet",
]
