"""The model zoo must match the CRD-family reference definitions key for key, so published teachers load."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from pckd_lightning.models import ModelOutput, ZooModel, create_model, list_models

# name -> (feature_dim, stage_channels): stem output first, then each stage's output.
ARCHITECTURES: dict[str, tuple[int, list[int]]] = {
    "resnet8": (64, [16, 16, 32, 64]),
    "resnet14": (64, [16, 16, 32, 64]),
    "resnet20": (64, [16, 16, 32, 64]),
    "resnet32": (64, [16, 16, 32, 64]),
    "resnet44": (64, [16, 16, 32, 64]),
    "resnet56": (64, [16, 16, 32, 64]),
    "resnet110": (64, [16, 16, 32, 64]),
    "resnet8x4": (256, [32, 64, 128, 256]),
    "resnet32x4": (256, [32, 64, 128, 256]),
    "wrn_16_1": (64, [16, 16, 32, 64]),
    "wrn_16_2": (128, [16, 32, 64, 128]),
    "wrn_40_1": (64, [16, 16, 32, 64]),
    "wrn_40_2": (128, [16, 32, 64, 128]),
    "vgg8": (512, [64, 128, 256, 512, 512]),
    "vgg11": (512, [64, 128, 256, 512, 512]),
    "vgg13": (512, [64, 128, 256, 512, 512]),
    "vgg16": (512, [64, 128, 256, 512, 512]),
    "vgg19": (512, [64, 128, 256, 512, 512]),
    "MobileNetV2": (1280, [16, 12, 16, 48, 160]),
    "ShuffleV1": (960, [24, 240, 480, 960]),
    "ShuffleV2": (1024, [24, 116, 232, 464]),
    "ResNet18": (512, [64, 64, 128, 256, 512]),
    "ResNet34": (512, [64, 64, 128, 256, 512]),
    "ResNet50": (2048, [64, 256, 512, 1024, 2048]),
    "imagenet_resnet18": (512, [64, 64, 128, 256, 512]),
    "imagenet_resnet34": (512, [64, 64, 128, 256, 512]),
    "imagenet_resnet50": (2048, [64, 256, 512, 1024, 2048]),
    "imagenet_mobilenet_v2": (1280, [32, 24, 32, 96, 320]),
}


@pytest.fixture(autouse=True)
def _deterministic_single_thread():
    """Seeded, and one intra-op thread: these tiny forwards gain nothing from more, and two OpenMP
    threads on a shared 2-core machine slow them down up to a hundredfold."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def conv(prefix: str) -> list[str]:
    return [f"{prefix}.weight"]


def linear(prefix: str) -> list[str]:
    return [f"{prefix}.weight", f"{prefix}.bias"]


def bn(prefix: str) -> list[str]:
    return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def test_registry_holds_exactly_the_zoo() -> None:
    assert set(list_models()) == set(ARCHITECTURES)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_forward_features_and_classifier(name: str) -> None:
    feature_dim, stage_channels = ARCHITECTURES[name]
    model = create_model(name, num_classes=10).eval()
    assert isinstance(model, ZooModel)
    assert model.feature_dim == feature_dim

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        out = model(x, with_features=True)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10)
    assert isinstance(out, ModelOutput)
    assert [s.shape[1] for s in out.stages] == stage_channels
    assert all(s.shape[0] == 2 and s.dim() == 4 for s in out.stages)
    assert out.pooled.shape == (2, feature_dim)
    torch.testing.assert_close(out.logits, logits)

    head = model.classifier_layer
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (feature_dim, 10)
    assert any(m is head for m in model.modules())
    # The logits are exactly the head applied to the pooled feature (PCKD reads its rows as centers).
    with torch.no_grad():
        torch.testing.assert_close(head(out.pooled), logits)


# Exact parameter counts for 100 classes, derived by hand from the reference layouts
# (conv k x k: k*k*c_in/groups*c_out, + c_out if it has a bias; BN: 2*c; linear: c_in*100 + 100).
PARAMETER_COUNTS = {
    # stem 3x3 3->16 + BN: 464; stage1: 9 blocks x 2 x (9*16*16 + 32) = 42048;
    # stage2: first block 4672 + 9280 + 1x1 projection 512+64 = 14528, then 8 x 18560 -> 163008;
    # stage3: first 18560 + 36992 + 2176 = 57728, then 8 x 73984 -> 649600; fc 64*100+100 = 6500.
    "resnet56": 861_620,
    # widths 32/64/128/256, one block per stage, every first block projects:
    # stem 928; stage1 18560+36992+2176 = 57728; stage2 73984+147712+8448 = 230144;
    # stage3 295424+590336+33280 = 919040; fc 25700.  (published: 1.23M)
    "resnet8x4": 1_233_540,
    # resnet8x4 plus 4 more identity blocks per stage: 4*73984 + 4*295424 + 4*1180672.  (published: 7.43M)
    "resnet32x4": 7_433_860,
    # pre-activation blocks (BN(in), 3x3, BN(out), 3x3, 1x1 projection on a width change), 6 per stage:
    # stem 432; block1 14432 + 5*18560; block2 57536 + 5*73984; block3 229760 + 5*295424;
    # final BN 256; fc 128*100+100.  (published: 2.26M)
    "wrn_40_2": 2_255_156,
    # conv+bias+BN per layer: block0 1920+37056; block1 74112+147840; block2 295680+590592;
    # block3 1181184+2360832; block4 2*2360832; classifier 51300.  (published: 9.46M)
    "vgg13": 9_462_180,
    # stem 1x1 3->24 + BN: 120; each stage: a down block (dw 3x3 + 1x1 left, 1x1 + dw 3x3 + 1x1 right)
    # then split blocks of 2*(c/2)^2 + 15*(c/2): layer1 7398 + 3*7598; layer2 43616 + 7*28652;
    # layer3 167968 + 3*111128; head 1x1 464->1024 + BN 477184; linear 102500.  (published: 1.36M)
    "ShuffleV2": 1_355_528,
    # width 0.5, expansion 6: stem 464; groups 608, 4296, 11688, 50464, 80928, 207168, 121760
    # (each block: 1x1 expand + dw 3x3 + 1x1 project, each with BN); conv2 160->1280 + BN 207360;
    # classifier 1280*100+100.  (published: 0.81M)
    "MobileNetV2": 812_836,
}


@pytest.mark.parametrize(("name", "expected"), sorted(PARAMETER_COUNTS.items()))
def test_parameter_count_matches_reference(name: str, expected: int) -> None:
    model = create_model(name, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == expected


def resnet8_keys() -> list[str]:
    keys = conv("conv1") + bn("bn1")
    for stage in (1, 2, 3):
        block = f"layer{stage}.0"
        keys += conv(f"{block}.conv1") + bn(f"{block}.bn1") + conv(f"{block}.conv2") + bn(f"{block}.bn2")
        if stage > 1:  # stride 2 and a width change: 1x1 projection named `downsample`
            keys += conv(f"{block}.downsample.0") + bn(f"{block}.downsample.1")
    return keys + linear("fc")


def wrn_16_1_keys() -> list[str]:
    keys = conv("conv1")
    for stage in (1, 2, 3):
        for index in (0, 1):
            block = f"block{stage}.layer.{index}"
            keys += bn(f"{block}.bn1") + conv(f"{block}.conv1") + bn(f"{block}.bn2") + conv(f"{block}.conv2")
            if stage > 1 and index == 0:  # 16->32 and 32->64 project; block1 stays 16 wide
                keys += conv(f"{block}.convShortcut")
    return keys + bn("bn1") + linear("fc")


def vgg8_keys() -> list[str]:
    keys = []
    for block in range(5):
        keys += linear(f"block{block}.0") + bn(f"block{block}.1")  # conv with bias, then BN
    return keys + linear("classifier")


@pytest.mark.parametrize(
    ("name", "expected", "count"),
    [("resnet8", resnet8_keys(), 56), ("wrn_16_1", wrn_16_1_keys(), 82), ("vgg8", vgg8_keys(), 37)],
)
def test_full_state_dict_keys(name: str, expected: list[str], count: int) -> None:
    keys = list(create_model(name).state_dict())
    assert keys == expected
    assert len(keys) == count


# (name, first keys, last keys, key count, some shapes) for the larger layouts.
KEY_LAYOUTS = [
    (
        "ShuffleV1",
        [*conv("conv1"), *bn("bn1"), *conv("layer1.0.conv1"), *bn("layer1.0.bn1"), *conv("layer1.0.conv2")],
        [*bn("layer3.3.bn3"), *linear("linear")],
        # stem 6 + 16 bottlenecks x (3 convs + 3 BN) + linear 2
        296,
        {
            "layer1.0.conv1.weight": (54, 24, 1, 1),  # first 1x1 is dense: the stem is 24 wide
            "layer1.0.conv3.weight": (216, 18, 1, 1),  # 240 - 24 concatenated input channels, 3 groups
            "layer2.0.conv1.weight": (60, 80, 1, 1),  # 240 in, 3 groups
            "layer3.3.conv2.weight": (240, 1, 3, 3),  # depthwise
            "layer3.3.conv3.weight": (960, 80, 1, 1),
            "linear.weight": (100, 960),
        },
    ),
    (
        "ShuffleV2",
        [*conv("conv1"), *bn("bn1"), *conv("layer1.0.conv1"), *bn("layer1.0.bn1")],
        [*conv("conv2"), *bn("bn2"), *linear("linear")],
        # stem 6 + 3 down blocks x 5 (conv + BN) + 13 split blocks x 3 (conv + BN) + head 6 + linear 2
        338,
        {
            "layer1.0.conv1.weight": (24, 1, 3, 3),
            "layer1.0.conv5.weight": (58, 58, 1, 1),
            "layer2.7.conv3.weight": (116, 116, 1, 1),
            "conv2.weight": (1024, 464, 1, 1),
        },
    ),
    (
        "MobileNetV2",
        [*conv("conv1.0"), *bn("conv1.1"), *conv("blocks.0.0.conv.0"), *bn("blocks.0.0.conv.1")],
        [
            *conv("blocks.6.0.conv.6"),
            *bn("blocks.6.0.conv.7"),
            *conv("conv2.0"),
            *bn("conv2.1"),
            *linear("classifier.0"),
        ],
        # stem 6 + 17 inverted residuals x (3 convs + 3 BN) + conv2 6 + classifier 2
        320,
        {
            "conv1.0.weight": (16, 3, 3, 3),
            "blocks.0.0.conv.0.weight": (16, 16, 1, 1),  # kept even at expansion 1
            "blocks.1.0.conv.3.weight": (48, 1, 3, 3),
            "blocks.6.0.conv.6.weight": (160, 480, 1, 1),
            "conv2.0.weight": (1280, 160, 1, 1),
            "classifier.0.weight": (100, 1280),
        },
    ),
]


@pytest.mark.parametrize(
    ("name", "first", "last", "count", "shapes"), KEY_LAYOUTS, ids=[layout[0] for layout in KEY_LAYOUTS]
)
def test_state_dict_layout(
    name: str, first: list[str], last: list[str], count: int, shapes: dict[str, tuple[int, ...]]
) -> None:
    state = create_model(name, num_classes=100).state_dict()
    keys = list(state)
    assert keys[: len(first)] == first
    assert keys[-len(last) :] == last
    assert len(keys) == count
    assert {k: tuple(state[k].shape) for k in shapes} == shapes


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("imagenet_resnet18", torchvision.models.resnet18),
        ("imagenet_resnet50", torchvision.models.resnet50),
        ("imagenet_mobilenet_v2", torchvision.models.mobilenet_v2),
    ],
)
def test_torchvision_weights_load_strictly(name: str, reference) -> None:
    tv_model = reference(num_classes=1000).eval()
    model = create_model(name, num_classes=1000).eval()
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [
        (k, v.shape) for k, v in tv_model.state_dict().items()
    ]
    model.load_state_dict(tv_model.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv_model(x))


def fill_deterministically(model: nn.Module) -> None:
    """Weights from a sine wave over each tensor, scaled by fan-in, so values need no RNG."""
    with torch.no_grad():
        for i, (name, tensor) in enumerate(model.state_dict().items()):
            if not tensor.dtype.is_floating_point:
                continue
            index = torch.arange(tensor.numel(), dtype=torch.float64)
            wave = torch.sin(0.7 * index + i).reshape(tensor.shape).to(tensor.dtype)
            if name.endswith("running_var"):
                tensor.copy_(1 + 0.5 * wave.abs())
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * wave)
            elif tensor.dim() == 1:  # BN scale
                tensor.copy_(1 + 0.2 * wave)
            else:
                tensor.copy_(wave / tensor[0].numel() ** 0.5)


# Logits (10 classes) of the reference definitions, in eval mode, for the weights of
# `fill_deterministically` and the input `sin(0.05 * arange)` of shape [1, 3, 32, 32]: computed by
# running the reference modules, so these pin the forward pass (block wiring, activations, pooling).
REFERENCE_LOGITS: dict[str, list[float]] = {
    "resnet8": [0.041741, 1.0912, 1.4386, 0.87415, -0.23445, -1.1795, -1.3638, -0.6783, 0.43264, 1.2573],
    "resnet8x4": [-1.4896, -0.72095, 2.6015, -4.5857, 6.5865, -8.188, 10.003, -11.405, 12.643, -13.876],
    "wrn_16_1": [2.1134, 11.855, 14.102, 7.4443, -3.9034, -12.77, -13.558, -5.7805, 5.6368, 13.475],
    "wrn_16_2": [19.308, 115.86, -34.128, -111.29, 48.609, 105.02, -62.274, -97.142, 74.673, 87.44],
    "vgg8": [2.0262, 3.5335, 4.84, 5.837, 6.4305, 6.5609, 6.2162, 5.4345, 4.2942, 2.8965],
    "vgg11": [3.8383, 6.9562, 9.5753, 11.52, 12.676, 12.995, 12.481, 11.177, 9.164, 6.5513],
    "MobileNetV2": [0.28939, -1.1359, 1.313, -0.97419, 0.43372, 0.58717, -1.095, 1.2786, -1.0439, 0.12263],
    "ShuffleV1": [-1.4521, -1.7827, -1.9676, -2.0096, -1.9082, -1.6585, -1.258, -0.71857, -0.076846, 0.60365],
    "ShuffleV2": [
        0.17404,
        0.46688,
        0.65865,
        0.6946,
        0.55307,
        0.25687,
        -0.12598,
        -0.49565,
        -0.74646,
        -0.79878,
    ],
    "ResNet18": [-165.96, 233.63, 617.68, 960.69, 1239.9, 1436.8, 1538.4, 1537.7, 1434.9, 1236.8],
    "ResNet50": [-5.8895, 5.8442, 11.835, 6.2633, -5.3955, -11.735, -6.5665, 5.0347, 11.702, 6.896],
}


@pytest.mark.parametrize("name", sorted(REFERENCE_LOGITS))
def test_logits_match_reference(name: str) -> None:
    model = create_model(name, num_classes=10).eval()
    fill_deterministically(model)
    x = torch.sin(0.05 * torch.arange(3 * 32 * 32, dtype=torch.float32)).reshape(1, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)[0]
    torch.testing.assert_close(logits, torch.tensor(REFERENCE_LOGITS[name]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2"])
def test_checkpoint_round_trip(name: str, tmp_path) -> None:
    model = create_model(name, num_classes=100)
    model.train()
    with torch.no_grad():  # move the BN running statistics away from their initial values
        model(torch.randn(4, 3, 32, 32))
    path = tmp_path / "ckpt.pth"
    torch.save({"model": model.state_dict()}, path)

    restored = create_model(name, num_classes=100).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(restored(x), model(x))
        restored.load_state_dict(torch.load(path)["model"], strict=True)
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name", ["resnet8", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet18"]
)
@pytest.mark.parametrize("size", [(64, 64), (40, 56)])
def test_any_resolution(name: str, size: tuple[int, int]) -> None:
    model = create_model(name, num_classes=10).eval()
    keys_before = {k: v.shape for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size), with_features=True)
    assert out.logits.shape == (2, 10)
    assert out.pooled.shape == (2, model.feature_dim)
    assert [s.shape[1] for s in out.stages] == ARCHITECTURES[name][1]
    assert {k: v.shape for k, v in model.state_dict().items()} == keys_before
    assert keys_before == {k: v.shape for k, v in create_model(name, num_classes=10).state_dict().items()}


def test_vgg_pools_before_last_block_only_at_64() -> None:
    """The reference skips the fourth max-pool at 32x32, so CIFAR teachers end on a 4x4 map."""
    model = create_model("vgg8").eval()
    with torch.no_grad():
        small = model(torch.randn(1, 3, 32, 32), with_features=True)
        large = model(torch.randn(1, 3, 64, 64), with_features=True)
    assert [tuple(s.shape[-2:]) for s in small.stages] == [(32, 32), (16, 16), (8, 8), (4, 4), (4, 4)]
    assert [tuple(s.shape[-2:]) for s in large.stages] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "MobileNetV2", "ShuffleV2"])
def test_backward_through_features(name: str) -> None:
    """Feature-based losses backpropagate through every stage (no in-place op breaks autograd)."""
    model = create_model(name, num_classes=10).train()
    out = model(torch.randn(2, 3, 32, 32), with_features=True)
    loss = out.logits.sum() + out.pooled.mean() + sum(stage.mean() for stage in out.stages)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet9'") as info:
        create_model("resnet9")
    message = str(info.value)
    assert all(name in message for name in ("resnet8", "wrn_40_2", "ShuffleV2", "imagenet_resnet50"))
