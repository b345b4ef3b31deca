"""Tests of the GPU-resident CIFAR path (run on CPU): format, augmentation semantics, seeding, coverage."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import SHARED_DATA, needs_cifar, write_fake_cifar
from pckd_lightning.data import CIFAR100_MEAN, CIFAR100_STD, CIFAR100DataModule, GPUResidentCIFAR100DataModule
from pckd_lightning.data.gpu_resident import (
    ResidentEvalLoader,
    ResidentTrainLoader,
    draw_params,
    multiview_rotation_batch,
    rotation_index_maps,
)
from pckd_lightning.data.sampling import EpochShuffleSampler

IDENTITY = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(n: int, size: int = 12, seed: int = 0) -> np.ndarray:
    """Random (hence asymmetric) uint8 RGB images [n, size, size, 3]."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _loader(
    images: np.ndarray, labels: np.ndarray | None = None, seed: int = 0, **kwargs
) -> ResidentTrainLoader:
    labels = np.arange(len(images)) % 7 if labels is None else labels
    options = {"batch_size": 8, "views": 4, "padding": 2, **IDENTITY, **kwargs}
    return ResidentTrainLoader(
        torch.from_numpy(images),
        torch.from_numpy(labels),
        seed=seed,
        **options,
    )


def _numpy_view(img: np.ndarray, flipped: bool, top: int, left: int, k: int, pad: int) -> np.ndarray:
    """Independent reference: flip, zero-pad, crop, rotate k·90° counter-clockwise; HWC uint8."""
    src = img[:, ::-1] if flipped else img
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)))
    size = img.shape[0]
    return np.rot90(padded[top : top + size, left : left + size], k, axes=(0, 1))


def _matching_crops(view_hwc: np.ndarray, img: np.ndarray, pad: int) -> set[tuple[bool, int, int]]:
    """All (flipped, top, left) such that ``view_hwc`` is that crop of the (flipped) zero-padded image."""
    size = img.shape[0]
    return (
        {
            (flipped, top, left)
            for flipped in (False, True)
            for top in range(2 * pad + 1)
            for left in range(2 * pad + 1)
            if np.array_equal(_numpy_view(img, flipped, top, left, 0, pad), view_hwc)
        }
        if view_hwc.shape[0] == size
        else set()
    )


def _to_hwc_uint8(view_chw: torch.Tensor) -> np.ndarray:
    """A view normalized with mean 0 / std 1 back to uint8 HWC (exact: x = pixel / 255 in float32)."""
    return np.rint(view_chw.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# the vectorized augmentation
# ---------------------------------------------------------------------------------------------------
def test_rotation_index_maps_match_torch_rot90():
    x = torch.arange(5 * 5).view(5, 5)
    rows, cols = rotation_index_maps(5, 6)
    for k in range(6):
        assert torch.equal(x[rows[k], cols[k]], torch.rot90(x, k, dims=(0, 1)))


def test_views_match_an_independent_numpy_computation_with_the_drawn_params():
    images = _images(16)
    params = draw_params(16, 4, 2, 0.5, torch.Generator().manual_seed(3), "cpu")
    out = multiview_rotation_batch(torch.from_numpy(images), params, 2, torch.zeros(3), torch.ones(3))
    assert out.shape == (16, 4, 3, 12, 12) and out.dtype == torch.float32 and out.is_contiguous()
    assert 0 < int(params.flips.sum()) < 16, "both flip outcomes occur in this draw"
    for b in range(16):
        for k in range(4):
            expected = _numpy_view(
                images[b], bool(params.flips[b]), int(params.tops[b, k]), int(params.lefts[b, k]), k, pad=2
            )
            np.testing.assert_array_equal(_to_hwc_uint8(out[b, k]), expected)


def test_each_unrotated_view_is_a_crop_of_the_shared_flipped_padded_image():
    images = _images(40, seed=1)
    x, _, idx = next(iter(_loader(images, batch_size=40, seed=5)))
    flips_seen = set()
    for b in range(0, 40, 5):  # a few samples, found by exhaustive search (no knowledge of the params)
        img = images[int(idx[b])]
        matches = []
        for k in range(4):
            unrotated = torch.rot90(x[b, k], -k, dims=(1, 2))
            found = _matching_crops(_to_hwc_uint8(unrotated), img, pad=2)
            assert found, f"view {k} of sample {b} is not a crop of the (flipped) padded image"
            matches.append({flipped for flipped, _, _ in found})
        shared = set.intersection(*matches)
        assert shared, f"the views of sample {b} do not share one flip"
        flips_seen |= shared
    assert flips_seen == {False, True}


def test_normalization_matches_torchvision_arithmetic_and_pads_with_zero_pixels():
    value = 200
    images = np.full((4, 12, 12, 3), value, dtype=np.uint8)
    loader = _loader(images, batch_size=4, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    x, _, _ = next(iter(loader))
    mean, std = torch.tensor(CIFAR100_MEAN), torch.tensor(CIFAR100_STD)
    inside = (torch.tensor(value / 255.0) - mean) / std
    padding = (0 - mean) / std
    for c in range(3):
        values = x[:, :, c].unique()
        is_inside, is_padding = (values - inside[c]).abs() < 1e-6, (values - padding[c]).abs() < 1e-6
        assert bool((is_inside | is_padding).all()) and bool(is_inside.any())
    # the border rows of a crop are padding exactly when its offset reaches into the padding
    params = draw_params(4, 4, 2, 0.5, torch.Generator().manual_seed(0), "cpu")
    out = multiview_rotation_batch(torch.from_numpy(images), params, 2, mean, std)
    for b in range(4):
        top = int(params.tops[b, 0])
        assert bool((out[b, 0, :, 0] == padding[:, None]).all()) == (top < 2)


def test_view_count_one_gives_single_view_batches_and_channels_last_keeps_values():
    images = _images(10)
    x, y, idx = next(iter(_loader(images, views=1, batch_size=10)))
    assert x.shape == (10, 3, 12, 12) and y.shape == idx.shape == (10,)
    a, _, _ = next(iter(_loader(images, seed=2)))
    b, _, _ = next(iter(_loader(images, seed=2, channels_last=True)))
    assert torch.equal(a, b)
    assert b.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


def test_crop_offsets_and_flips_are_uniform():
    params = draw_params(4000, 4, 4, 0.5, torch.Generator().manual_seed(0), "cpu")
    counts = torch.bincount(torch.cat([params.tops.flatten(), params.lefts.flatten()]), minlength=9)
    assert counts.numel() == 9
    expected = 2 * 4000 * 4 / 9
    assert (counts.float() - expected).abs().max() < 0.1 * expected
    assert 0.45 < params.flips.float().mean() < 0.55
    no_flip = draw_params(100, 4, 4, 0.0, None, "cpu")
    assert not no_flip.flips.any()


# ---------------------------------------------------------------------------------------------------
# the loader: epochs, seeding, format
# ---------------------------------------------------------------------------------------------------
def test_epoch_covers_every_sample_once_and_labels_follow_indices():
    images, labels = _images(37), np.random.default_rng(0).integers(0, 100, 37)
    loader = _loader(images, labels, batch_size=8)
    assert len(loader) == 5
    for _ in range(2):  # two epochs, two different orders
        batches = list(loader)
        assert [len(y) for _, y, _ in batches] == [8, 8, 8, 8, 5]
        seen = torch.cat([idx for _, _, idx in batches])
        assert sorted(seen.tolist()) == list(range(37))
        for x, y, idx in batches:
            assert x.dtype == torch.float32 and x.shape[1:] == (4, 3, 12, 12)
            assert y.dtype == idx.dtype == torch.int64
            np.testing.assert_array_equal(y.numpy(), labels[idx.numpy()])
    assert len(_loader(images, batch_size=8, drop_last=True)) == 4


def test_epochs_are_seeded_by_seed_and_epoch_alone_like_the_ordinary_sampler():
    images = _images(30)
    loader = _loader(images, seed=4)
    epochs = [[x.clone() for x, _, _ in loader] for _ in range(3)]
    assert loader.epoch == 3 and loader.sampler is loader
    assert not torch.equal(epochs[0][0], epochs[1][0])
    resumed = _loader(images, seed=4)
    resumed.set_epoch(2)  # what Lightning does before epoch 2 of a resumed run
    assert all(torch.equal(a, b) for a, b in zip(epochs[2], (x for x, _, _ in resumed), strict=True))


def test_each_epochs_order_is_the_ordinary_samplers_on_cpu():
    """Both paths seed an epoch's generator with ``epoch_seed(seed, epoch)``: on CPU, the same order."""
    images = _images(30)
    loader = _loader(images, seed=4, drop_last=False)
    sampler = EpochShuffleSampler(30, seed=4)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        assert torch.cat([idx for _, _, idx in loader]).tolist() == [i for i, _ in sampler]


def test_same_seed_same_batches_other_seed_other_batches():
    images = _images(30)
    first = [torch.cat([x.flatten(), idx.float()]) for x, _, idx in _loader(images, seed=7)]
    again = [torch.cat([x.flatten(), idx.float()]) for x, _, idx in _loader(images, seed=7)]
    other = [torch.cat([x.flatten(), idx.float()]) for x, _, idx in _loader(images, seed=8)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_eval_loader_is_plain_ordered_and_normalized():
    images = _images(10)
    loader = ResidentEvalLoader(torch.from_numpy(images), torch.arange(10), 4, CIFAR100_MEAN, CIFAR100_STD)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y, _ in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.arange(10))
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(x * std + mean, expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------------------------
# the data module (tiny fake CIFAR folder; the real data subsampled when present)
# ---------------------------------------------------------------------------------------------------
def test_data_module_batches_match_the_ordinary_format(tmp_path: Path):
    root = write_fake_cifar(tmp_path, n=200).parent
    kwargs = {"check_sizes": False, "batch_size": 16, "views": 4, "seed": 3}
    dm = GPUResidentCIFAR100DataModule(root, device="cpu", **kwargs)
    ordinary = CIFAR100DataModule(root, **kwargs)
    x, y, idx = next(iter(dm.train_dataloader()))
    xo, yo, idxo = next(iter(ordinary.train_dataloader()))
    assert x.shape == xo.shape == (16, 4, 3, 32, 32)
    assert (x.dtype, y.dtype, idx.dtype) == (xo.dtype, yo.dtype, idxo.dtype)
    assert x.device.type == "cpu"
    np.testing.assert_array_equal(y.numpy(), dm.train_set.labels[idx.numpy()])
    assert len(dm.train_dataloader()) == len(ordinary.train_dataloader()) == 13
    # same seed -> same batches; the data module's seed drives the generator
    x2, _, idx2 = next(iter(GPUResidentCIFAR100DataModule(root, device="cpu", **kwargs).train_dataloader()))
    assert torch.equal(x, x2) and torch.equal(idx, idx2)
    # validation: resident and ordinary give the same tensors
    xv, yv, iv = next(iter(dm.val_dataloader()))
    xvo, yvo, ivo = next(iter(ordinary.val_dataloader()))
    torch.testing.assert_close(xv, xvo, atol=1e-6, rtol=0)
    assert torch.equal(yv, yvo) and torch.equal(iv, ivo)
    ordinary_val = GPUResidentCIFAR100DataModule(
        root, device="cpu", resident_val=False, **kwargs
    ).val_dataloader()
    assert isinstance(ordinary_val, torch.utils.data.DataLoader)


def test_data_module_subsampling_and_single_view(tmp_path: Path):
    root = write_fake_cifar(tmp_path, n=300).parent
    dm = GPUResidentCIFAR100DataModule(
        root, device="cpu", check_sizes=False, train_per_class=2, batch_size=50
    )
    batches = list(dm.train_dataloader())
    assert [x.shape for x, _, _ in batches] == [(50, 3, 32, 32)] * 4
    seen = torch.cat([idx for _, _, idx in batches])
    assert sorted(seen.tolist()) == list(range(200))
    labels = torch.cat([y for _, y, _ in batches])
    assert torch.bincount(labels, minlength=100).tolist() == [2] * 100


def test_data_module_is_refused_under_ddp_before_any_work(tmp_path: Path):
    """Lightning cannot give each rank its share of a loader made on the device: every rank would train on
    the same batches. Refused once the trainer is built (the world size known), before DDP starts."""
    from helpers import compose_config
    from pckd_lightning.errors import ConfigError
    from pckd_lightning.run import fit
    from pckd_lightning.run.check import check_world

    root = write_fake_cifar(tmp_path, n=300).parent
    data = [f"paths.data_dir={root}", "+data.check_sizes=false", "data.train_per_class=2"]
    scratch = ["model=digits_scratch_resnet8", "distill=ce"]
    cfg = compose_config(
        ["data=cifar100_gpu", "trainer=ddp_cpu", *scratch, *data], output_dir=tmp_path / "run"
    )
    with pytest.raises(ConfigError, match=r"2 processes.*data=cifar100 under DDP"):
        fit(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
    one = GPUResidentCIFAR100DataModule(root, device="cpu", check_sizes=False)
    check_world(one, 1)  # one device: its purpose
    check_world(CIFAR100DataModule(root, check_sizes=False), 2)  # the DataLoader path splits under DDP


@pytest.mark.cifar
@needs_cifar
def test_real_cifar_statistics_match_the_ordinary_path():
    kwargs = {"train_per_class": 5, "batch_size": 250, "views": 4, "seed": 0}
    dm = GPUResidentCIFAR100DataModule(str(SHARED_DATA), device="cpu", **kwargs)
    x = torch.cat([b[0] for b in dm.train_dataloader()])
    xo = torch.cat([b[0] for b in CIFAR100DataModule(str(SHARED_DATA), **kwargs).train_dataloader()])
    assert x.shape == xo.shape == (500, 4, 3, 32, 32)
    dims = (0, 1, 3, 4)
    torch.testing.assert_close(x.mean(dims), xo.mean(dims), atol=0.03, rtol=0)
    torch.testing.assert_close(x.std(dims), xo.std(dims), atol=0.03, rtol=0)
    # un-augmented validation images of the train statistics: per-channel mean ~0 and std ~1
    xv = torch.cat([b[0] for b in itertools.islice(dm.val_dataloader(), 4)])
    assert xv.mean((0, 2, 3)).abs().max() < 0.1
    assert (xv.std((0, 2, 3)) - 1).abs().max() < 0.1


def test_data_module_trains_a_distillation_module_with_lightning(tmp_path: Path):
    import lightning as L

    from pckd_lightning.distillation import DistillationModule
    from pckd_lightning.losses import CrossEntropyTerm, KDTerm
    from pckd_lightning.models import create_model

    root = write_fake_cifar(tmp_path, n=200).parent
    dm = GPUResidentCIFAR100DataModule(root, device=None, check_sizes=False, batch_size=32, views=4)
    module = DistillationModule(
        student=create_model("resnet8"),
        teacher=create_model("resnet8"),
        terms={"ce": CrossEntropyTerm(), "kd": KDTerm()},
        optimizer=lambda params: torch.optim.SGD(params, lr=0.01),
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert dm.resident_device == torch.device("cpu")
    assert torch.isfinite(trainer.callback_metrics["val/top1"])
