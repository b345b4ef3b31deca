"""Tests of pckd_lightning.data: multi-view rotation, subsampling, CIFAR-100, digits and ImageFolder."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SHARED_DATA, dump_pickle, needs_cifar, write_fake_cifar
from pckd_lightning.data import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    MultiViewRotation,
    per_class_subsample,
    read_cifar100,
)
from pckd_lightning.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------------
# MultiViewRotation
# ---------------------------------------------------------------------------------------------------
SIZE, PAD = 12, 2


def _random_image(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """A random (hence asymmetric: no flip or rotation maps it onto itself) uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def _identity_norm_mvr(**kwargs) -> MultiViewRotation:
    # mean 0, std 1: the views are the crops' pixels / 255, so they can be compared with numpy exactly
    return MultiViewRotation(image_size=SIZE, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), **kwargs)


def _matching_crops(view_hwc: np.ndarray, img: np.ndarray, pad: int) -> set[tuple[bool, int, int]]:
    """All (flipped, top, left) such that ``view_hwc`` is that crop of the (flipped) zero-padded image."""
    found = set()
    for flipped in (False, True):
        src = img[:, ::-1] if flipped else img
        padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)))
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                if np.array_equal(padded[top : top + SIZE, left : left + SIZE], view_hwc):
                    found.add((flipped, top, left))
    return found


def _unrotated_views(out: torch.Tensor) -> list[np.ndarray]:
    """View k rotated back by -k·90° (numpy), as uint8 HWC."""
    views = []
    for k in range(out.shape[0]):
        chw = np.rot90(out[k].numpy(), -k, axes=(1, 2))
        views.append(np.round(chw.transpose(1, 2, 0) * 255).astype(np.uint8))
    return views


def test_multiview_rotation_views_are_rotated_crops_with_one_shared_flip():
    img = _random_image()
    mvr = _identity_norm_mvr(padding=PAD, flip_p=0.5)
    flips_seen, some_views_differ = set(), False
    for seed in range(12):
        torch.manual_seed(seed)
        out = mvr(Image.fromarray(img))
        assert out.shape == (4, 3, SIZE, SIZE)
        assert out.dtype == torch.float32
        matches = [_matching_crops(v, img, PAD) for v in _unrotated_views(out)]
        assert all(matches), f"seed {seed}: a view is not a rotated crop of the padded image"
        common_flips = set.intersection(*({f for f, _, _ in m} for m in matches))
        assert len(common_flips) == 1, f"seed {seed}: the views do not share one flip"
        flips_seen |= common_flips
        offsets = [{(top, left) for _, top, left in m} for m in matches]
        some_views_differ |= not set.intersection(*offsets)
    assert flips_seen == {False, True}, "flip_p=0.5 should flip some images and not others"
    assert some_views_differ, "the crop should be drawn independently per view"


@pytest.mark.parametrize("flip_p, flipped", [(0.0, False), (1.0, True)])
def test_multiview_rotation_flip_probability_extremes(flip_p: float, flipped: bool):
    img = _random_image(1)
    torch.manual_seed(0)
    out = _identity_norm_mvr(padding=PAD, flip_p=flip_p)(Image.fromarray(img))
    for v in _unrotated_views(out):
        assert {f for f, _, _ in _matching_crops(v, img, PAD)} == {flipped}


def test_multiview_rotation_without_crop_or_flip_is_exact_counterclockwise_rot90():
    img = _random_image(2)
    out = _identity_norm_mvr(padding=0, flip_p=0.0)(Image.fromarray(img))
    expected0 = torch.from_numpy(img.transpose(2, 0, 1).astype(np.float32) / 255)
    assert torch.equal(out[0], expected0)
    for k in range(4):
        assert torch.equal(out[k], torch.rot90(out[0], k, dims=(1, 2)))
    # counter-clockwise: the original top-right pixel is the top-left one of view 1
    np.testing.assert_array_equal(np.round(out[1][:, 0, 0].numpy() * 255), img[0, SIZE - 1])


def test_multiview_rotation_normalizes_and_supports_other_view_counts_and_crops():
    from torchvision.transforms import RandomResizedCrop

    img = Image.fromarray(_random_image(3, size=20))
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    out = MultiViewRotation(mean=mean, std=std, views=2, crop=RandomResizedCrop(8), flip_p=0.0)(img)
    assert out.shape == (2, 3, 8, 8)
    plain = MultiViewRotation(image_size=20, padding=0, mean=mean, std=std, views=1, flip_p=0.0)(img)
    raw = torch.from_numpy(np.asarray(img).transpose(2, 0, 1).astype(np.float32) / 255)
    expected = (raw - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(plain[0], expected)


# ---------------------------------------------------------------------------------------------------
# per-class subsampling
# ---------------------------------------------------------------------------------------------------
def _labels(num_classes: int = 5, per_class: int = 20) -> np.ndarray:
    return np.random.default_rng(123).permutation(np.repeat(np.arange(num_classes), per_class))


def test_per_class_subsample_counts_and_order():
    labels = _labels()
    idx = per_class_subsample(labels, 3, seed=0)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0), "indices should be sorted and unique"
    np.testing.assert_array_equal(np.bincount(labels[idx]), [3] * 5)
    # more than available: every sample of the class; None: everything
    np.testing.assert_array_equal(per_class_subsample(labels, 50, seed=0), np.arange(100))
    np.testing.assert_array_equal(per_class_subsample(labels, None, seed=0), np.arange(100))


def test_per_class_subsample_is_deterministic_and_seeded():
    labels = _labels()
    np.random.seed(1)
    torch.manual_seed(1)
    a = per_class_subsample(labels, 4, seed=7)
    np.random.seed(2)
    torch.manual_seed(2)
    b = per_class_subsample(labels, 4, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, per_class_subsample(labels, 4, seed=8))


def test_per_class_subsample_empty_class_raises():
    labels = np.array([0, 0, 1, 1, 3, 3])
    with pytest.raises(DataError, match=r"data\.train_per_class=1 leaves class 2 \('two'\)"):
        per_class_subsample(
            labels, 1, 0, num_classes=4, option="data.train_per_class", class_names=["a", "b", "two", "c"]
        )
    with pytest.raises(DataError, match="val_per_class=0 leaves class 0"):
        per_class_subsample(labels, 0, 0, option="val_per_class")


# ---------------------------------------------------------------------------------------------------
# CIFAR-100: the real data
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cifar_test_pickle() -> dict:
    with (SHARED_DATA / "cifar-100-python" / "test").open("rb") as f:
        return pickle.load(f, encoding="latin1")


@pytest.mark.cifar
@needs_cifar
def test_cifar100_subsampled_module_sizes_and_batches(cifar_test_pickle: dict):
    dm = CIFAR100DataModule(str(SHARED_DATA), train_per_class=2, val_per_class=1, batch_size=16)
    dm.setup("fit")
    assert (dm.num_classes, dm.image_size, dm.in_channels) == (100, 32, 3)
    assert len(dm.class_names) == 100 and dm.class_names[0] == "apple"
    assert len(dm.train_set) == 200 and len(dm.val_set) == 100
    np.testing.assert_array_equal(np.bincount(dm.train_set.labels, minlength=100), [2] * 100)
    np.testing.assert_array_equal(np.bincount(dm.val_set.labels, minlength=100), [1] * 100)

    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and y.shape == idx.shape == (16,)
    assert y.dtype == idx.dtype == torch.int64
    assert int(y.min()) >= 0 and int(y.max()) < 100
    assert int(idx.min()) >= 0 and int(idx.max()) < 200 and len(set(idx.tolist())) == 16
    np.testing.assert_array_equal(y.numpy(), dm.train_set.labels[idx.numpy()])

    # validation: plain order, the un-augmented image; check pixels against the raw pickle (R,G,B planes)
    x, y, idx = next(iter(dm.val_dataloader()))
    assert x.shape == (16, 3, 32, 32)
    np.testing.assert_array_equal(idx.numpy(), np.arange(16))
    raw_rows = dm.val_set.indices[:16]
    raw = cifar_test_pickle["data"][raw_rows].reshape(16, 3, 32, 32).astype(np.float32) / 255
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    torch.testing.assert_close(x * std + mean, torch.from_numpy(raw), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(y.numpy(), np.asarray(cifar_test_pickle["fine_labels"])[raw_rows])


@pytest.mark.cifar
@needs_cifar
def test_cifar100_four_view_batches():
    dm = CIFAR100DataModule(str(SHARED_DATA), train_per_class=2, val_per_class=1, batch_size=8, views=4)
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 4, 3, 32, 32) and y.shape == idx.shape == (8,)
    assert len(dm.train_labels) == 200
    xv, _, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (8, 3, 32, 32), "validation is single-view whatever `views` is"


@pytest.mark.cifar
@needs_cifar
def test_cifar100_normalization_constants_match_the_train_data():
    with (SHARED_DATA / "cifar-100-python" / "train").open("rb") as f:
        data = pickle.load(f, encoding="latin1")["data"]
    assert data.shape == (50000, 3072) and data.dtype == np.uint8
    planes = data.reshape(50000, 3, 1024)
    for c in range(3):
        hist = np.bincount(planes[:, c].ravel(), minlength=256).astype(np.float64)
        values = np.arange(256) / 255.0
        mean = (hist * values).sum() / hist.sum()
        std = np.sqrt((hist * (values - mean) ** 2).sum() / hist.sum())
        assert mean == pytest.approx(CIFAR100_MEAN[c], abs=1e-3)
        assert std == pytest.approx(CIFAR100_STD[c], abs=1e-3)


# ---------------------------------------------------------------------------------------------------
# CIFAR-100: malformed folders (tiny fake pickles)
# ---------------------------------------------------------------------------------------------------


def _patch_split(split: str, **changes) -> Callable[[Path], Path]:
    def mutate(folder: Path) -> Path:
        with (folder / split).open("rb") as f:
            d = pickle.load(f, encoding="latin1")
        d.update(changes)
        dump_pickle(folder / split, d)
        return folder / split

    return mutate


def _delete(name: str) -> Callable[[Path], Path]:
    def mutate(folder: Path) -> Path:
        (folder / name).unlink()
        return folder / name

    return mutate


def _garbage(folder: Path) -> Path:
    (folder / "train").write_bytes(b"not a pickle")
    return folder / "train"


@pytest.mark.parametrize(
    "mutate, detail",
    [
        (_delete("test"), "missing file"),
        (_delete("meta"), "missing file"),
        (_garbage, "cannot unpickle"),
        (_patch_split("train", data=np.zeros((100, 3000), dtype=np.uint8)), "(100, 3000)"),
        (_patch_split("test", data=np.zeros((100, 3072), dtype=np.float32)), "float32"),
        (_patch_split("train", fine_labels=[*range(99), 100]), "[0, 100]"),
        (_patch_split("test", fine_labels=[-1, *range(1, 100)]), "[-1, 99]"),
        (_patch_split("train", fine_labels=list(range(50))), "'fine_labels' has shape (50,)"),
        (_patch_split("test", fine_labels=[0] * 100), "classes have no image"),
    ],
)
def test_cifar100_malformed_folder_raises_with_path_and_fix(tmp_path: Path, mutate, detail: str):
    bad_path = mutate(write_fake_cifar(tmp_path))
    dm = CIFAR100DataModule(str(tmp_path), check_sizes=False)
    with pytest.raises(DataError) as err:
        dm.setup()
    msg = str(err.value)
    assert str(bad_path) in msg
    assert detail in msg
    assert "data.download=true" in msg and "copy the standard 'cifar-100-python' folder" in msg


def test_cifar100_missing_folder_and_partial_copy(tmp_path: Path):
    with pytest.raises(DataError, match="not found") as err:
        CIFAR100DataModule(str(tmp_path)).setup()
    assert str(tmp_path / "cifar-100-python") in str(err.value)
    assert "data.download=true" in str(err.value)

    write_fake_cifar(tmp_path)
    with pytest.raises(DataError, match=r"holds 100 images .*expected .*50000 x 3072"):
        read_cifar100(tmp_path, "train")  # official sizes are required by default


def test_cifar100_fake_copy_loads_when_sizes_are_not_checked(tmp_path: Path):
    write_fake_cifar(tmp_path, n=200)
    dm = CIFAR100DataModule(str(tmp_path), check_sizes=False, batch_size=4, train_per_class=1)
    x, _, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and len(dm.train_set) == 100 and len(dm.val_set) == 200
    assert dm.class_names[5] == "c5"


def test_cifar100_download_only_when_files_are_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets

    calls = []

    def fake_download(root: str, train: bool = True, download: bool = False):
        calls.append(root)
        write_fake_cifar(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake_download)
    dm = CIFAR100DataModule(str(tmp_path), download=True, check_sizes=False)
    dm.prepare_data()
    dm.setup()
    assert calls == [str(tmp_path)] and len(dm.train_set) == 100
    # a complete copy (whatever its checksums) is never re-downloaded
    CIFAR100DataModule(str(tmp_path), download=True, check_sizes=False).setup()
    assert len(calls) == 1
    # without download=True nothing is fetched
    with pytest.raises(DataError):
        CIFAR100DataModule(str(tmp_path / "elsewhere")).setup()
    assert len(calls) == 1


# ---------------------------------------------------------------------------------------------------
# digits (the embedded default data)
# ---------------------------------------------------------------------------------------------------
def test_digits_stratified_deterministic_split():
    np.random.seed(0)
    torch.manual_seed(0)
    a = DigitsDataModule(split_seed=3)
    a.setup()
    assert (a.num_classes, a.image_size, a.in_channels) == (10, 32, 3)
    assert len(a.train_set) + len(a.val_set) == 1797
    assert len(a.val_set) == pytest.approx(0.2 * 1797, abs=1)
    val_counts = np.bincount(a.val_set.labels, minlength=10)
    all_counts = val_counts + np.bincount(a.train_set.labels, minlength=10)
    assert np.all(np.abs(val_counts - 0.2 * all_counts) <= 1)

    np.random.seed(99)  # the split must not depend on the global RNGs
    torch.manual_seed(99)
    b = DigitsDataModule(split_seed=3, seed=5)  # the run seed does not move the split
    b.setup()
    np.testing.assert_array_equal(a.val_set.source.images, b.val_set.source.images)
    np.testing.assert_array_equal(a.val_set.labels, b.val_set.labels)
    c = DigitsDataModule(split_seed=4)
    c.setup()
    assert not np.array_equal(a.val_set.source.images, c.val_set.source.images)


def test_digits_batches_and_transform_settings():
    dm = DigitsDataModule(batch_size=8, train_per_class=3, val_per_class=2)
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and y.shape == idx.shape == (8,)
    assert int(y.max()) < 10 and int(idx.max()) < 30
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2]), "gray repeated to 3 channels"
    # shuffling follows the module's seed, not the global RNG
    torch.manual_seed(5)
    _, _, idx2 = next(
        iter(DigitsDataModule(batch_size=8, train_per_class=3, val_per_class=2).train_dataloader())
    )
    assert torch.equal(idx, idx2)
    xv, _, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (8, 3, 32, 32) and len(dm.val_set) == 20

    dm4 = DigitsDataModule(batch_size=8, views=4, image_size=16, train_per_class=2)
    x4, _, _ = next(iter(dm4.train_dataloader()))
    assert x4.shape == (8, 4, 3, 16, 16)
    mvr = dm4.train_transform()
    assert isinstance(mvr, MultiViewRotation) and mvr.flip_p == 0.0 and mvr.crop.padding == 2


def test_digits_normalization_uses_train_statistics():
    dm = DigitsDataModule()
    dm.setup()
    imgs = torch.from_numpy(dm.train_set.source.images).permute(0, 3, 1, 2).float() / 255
    normed = (imgs - dm.mean[0]) / dm.std[0]
    assert float(normed.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(normed.std()) == pytest.approx(1.0, abs=1e-3)


def test_empty_class_through_the_module():
    with pytest.raises(DataError, match=r"data\.train_per_class=0 leaves class 0"):
        DigitsDataModule(train_per_class=0).setup()


# ---------------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------------
def _write_image_folder(root: Path, splits=("train", "val"), classes=("cat", "dog")) -> Path:
    rng = np.random.default_rng(0)
    for split in splits:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                pixels = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_image_folder_batches(tmp_path: Path):
    root = _write_image_folder(tmp_path)
    dm = ImageFolderDataModule(str(root), image_size=32, batch_size=4)
    assert dm.num_classes == 2 and dm.class_names == ["cat", "dog"]
    x, y, idx = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1} and int(idx.max()) < 6
    xv, yv, idxv = next(iter(dm.val_dataloader()))
    assert xv.shape == (4, 3, 32, 32)
    assert yv.tolist() == [0, 0, 0, 1] and idxv.tolist() == [0, 1, 2, 3]

    dm4 = ImageFolderDataModule(str(root), image_size=32, batch_size=4, views=4, train_per_class=2)
    x4, _, _ = next(iter(dm4.train_dataloader()))
    assert x4.shape == (4, 4, 3, 32, 32) and len(dm4.train_set) == 4


def test_image_folder_missing_val_or_class_mismatch_raises(tmp_path: Path):
    root = _write_image_folder(tmp_path / "a", splits=("train",))
    with pytest.raises(DataError, match=r"val.* not found"):
        ImageFolderDataModule(str(root), image_size=32).setup()

    root = _write_image_folder(tmp_path / "b")
    (root / "val" / "dog").rename(root / "val" / "bird")
    with pytest.raises(DataError, match=r"only in train: \['dog'\], only in val: \['bird'\]"):
        ImageFolderDataModule(str(root), image_size=32).setup()


def test_class_subset_keeps_the_first_classes_only():
    full = DigitsDataModule(image_size=8, seed=0)
    part = DigitsDataModule(image_size=8, seed=0, class_subset=3)
    full.setup("fit")
    part.setup("fit")
    assert part.num_classes == 3 and part.dataset_classes == 10
    assert set(np.unique(part.train_labels)) == {0, 1, 2}
    assert len(part.train_set) == int((full.train_labels < 3).sum())
    with pytest.raises(ConfigError, match=r"class_subset=11.*10 classes"):
        DigitsDataModule(image_size=8, class_subset=11).setup("fit")


def test_a_last_training_batch_of_one_image_is_dropped():
    dm = DigitsDataModule(image_size=8, seed=0)
    dm.setup("fit")
    n = len(dm.train_set)
    dm.batch_size = n - 1  # the second batch would hold a single image
    sizes = [len(batch[1]) for batch in dm.train_dataloader()]
    assert sizes == [n - 1]
    assert not dm.val_dataloader().drop_last  # validation keeps every image


def test_under_ddp_each_rank_validates_its_share_with_no_image_twice():
    """Lightning's default DistributedSampler pads a split to a multiple of the world size, so an image would
    count twice in val/top1; the data module gives each rank a disjoint share that Lightning keeps."""
    from types import SimpleNamespace

    from torch.utils.data import DistributedSampler

    def ddp(rank: int, **debug) -> SimpleNamespace:  # what Lightning's Trainer offers the data module
        limits = {"overfit_batches": 0, "limit_val_batches": 1.0, "limit_test_batches": 1.0}
        return SimpleNamespace(global_rank=rank, **{"world_size": 2} | limits | debug)

    def indices(loader) -> list[int]:
        return torch.cat([idx for _, _, idx in loader]).tolist()

    seen = []
    dm = DigitsDataModule(image_size=8, class_subset=5, val_per_class=3, val_batch_size=4)
    for rank in range(2):
        dm.trainer = ddp(rank)
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, DistributedSampler)  # Lightning replaces any other sampler
        seen.append(indices(loader))
        assert indices(dm.test_dataloader()) == seen[-1]
    assert len(seen[0]) + len(seen[1]) == 15 and sorted(seen[0] + seen[1]) == list(range(15))
    dm.trainer = None  # one process: the whole split, in order
    assert indices(dm.val_dataloader()) == list(range(15))
    # where a rank's share could end with no batch, Lightning's sampler stays: a rank without a batch would
    # skip the evaluation whose end the other ranks synchronize
    for debug in ({"limit_val_batches": 0.5}, {"overfit_batches": 2}):
        dm.trainer = ddp(0, **debug)
        assert not isinstance(dm.val_dataloader().sampler, DistributedSampler)
    dm.trainer = ddp(0, limit_test_batches=0.5)  # the test stage's limit, on the validation split too
    assert isinstance(dm.val_dataloader().sampler, DistributedSampler)
    assert not isinstance(dm.test_dataloader().sampler, DistributedSampler)
    dm.trainer = ddp(0, limit_val_batches=2)  # a batch count keeps a batch on every rank
    assert isinstance(dm.val_dataloader().sampler, DistributedSampler)
    tiny = DigitsDataModule(image_size=8, class_subset=2, val_per_class=1)
    tiny.trainer = ddp(2, world_size=3)
    assert indices(tiny.val_dataloader()) == [0, 1]  # two images for three ranks
