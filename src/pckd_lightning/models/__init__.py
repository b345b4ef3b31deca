"""The model zoo: every architecture registers itself on import, so ``create_model(name)`` sees them all;
timm's models (``timm:<name>``) and your own modules (``package.Name``, with taps) are built by it too."""

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
from pckd_lightning.models.base import Capability, ModelOutput, WeightsFile, WrappedModel, ZooModel
from pckd_lightning.models.registry import (
    create_model,
    list_models,
    model_config,
    model_name,
    register_model,
    unregister_model,
)
from pckd_lightning.models.tapped import TappedModel
from pckd_lightning.models.timm_models import TimmModel

__all__ = [
    "Capability",
    "ModelOutput",
    "TappedModel",
    "TimmModel",
    "WeightsFile",
    "WrappedModel",
    "ZooModel",
    "cifar_resnet",
    "create_model",
    "list_models",
    "mobilenetv2",
    "model_config",
    "model_name",
    "register_model",
    "resnet_v2",
    "shufflenetv1",
    "shufflenetv2",
    "torchvision_models",
    "unregister_model",
    "vgg",
    "wide_resnet",
]
