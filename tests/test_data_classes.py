"""data.classes: any class ids (a list or a range "first-last"), relabelled 0..k-1 in the order given."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from helpers import SHARED_DATA, compose_config, needs_cifar, write_fake_cifar
from pckd_lightning.data import CIFAR100DataModule, DigitsDataModule, ImageFolderDataModule
from pckd_lightning.data.classes import parse_classes, select_classes
from pckd_lightning.data.gpu_resident import GPUResidentCIFAR100DataModule
from pckd_lightning.errors import ConfigError
from pckd_lightning.schema.config import validate

NO_DATA = "/nonexistent/data"  # a refusal must come before any data is read


# -- the forms accepted --------------------------------------------------------------------------------


def test_the_range_form_includes_both_ends():
    assert parse_classes("20-39", 100) == tuple(range(20, 40))
    assert parse_classes(" 3 - 5 ", 100) == (3, 4, 5)
    assert parse_classes("98-99", 100) == (98, 99)


def test_lists_tuples_listconfigs_and_numpy_ints_are_ids_in_the_given_order():
    assert parse_classes([39, 20, 77], 100) == (39, 20, 77)
    assert parse_classes((5, 4), 100) == (5, 4)
    assert parse_classes(OmegaConf.create([7, 2]), 100) == (7, 2)  # what Hydra passes
    assert parse_classes(list(np.arange(3, 6)), 100) == (3, 4, 5)
    assert all(type(i) is int for i in parse_classes(list(np.arange(3, 6)), 100))


def test_class_subset_is_the_first_n_classes():
    assert select_classes(None, 4, 100) == (0, 1, 2, 3)
    assert select_classes(None, None, 100) is None
    assert CIFAR100DataModule(NO_DATA, class_subset=20).classes == tuple(range(20))
    assert CIFAR100DataModule(NO_DATA, classes="20-39").num_classes == 20
    assert CIFAR100DataModule(NO_DATA).classes == tuple(range(100))


# -- the refusals: key, value, valid ids and the fix, before any data is read ----------------------------

REFUSED = [
    ([1, 100], r"data\.classes=\[1, 100\] holds 100, outside .*0\.\.99. Fix: keep to ids in 0\.\.99"),
    ([-1, 3], r"data\.classes=\[-1, 3\] holds -1, outside .*0\.\.99"),
    ("90-100", r"data\.classes='90-100' holds 100, outside .*0\.\.99"),
    ([4, 7, 4], r"data\.classes=\[4, 7, 4\] holds 4 more than once.*0\.\.99. Fix: list each class once"),
    ([1, "a"], r"data\.classes=\[1, 'a'\] holds 'a', not an int.*0\.\.99. Fix: list ints only"),
    ([1, 2.0], r"holds 2\.0, not an int"),
    ([True, 2], r"holds True, not an int"),
    (
        [],
        r"data\.classes=\[\] keeps 0 classes, and a classifier needs at least 2.*0\.\.99. Fix: list 2",
    ),
    ([3], r"data\.classes=\[3\] keeps 1 class,"),
    (
        "20..39",
        r"data\.classes='20\.\.39' is not a range 'first-last'.*0\.\.99. Fix: write .*data\.classes=20-39",
    ),
    (
        "39-20",
        r"data\.classes='39-20' runs backwards.*Fix: write the smaller id first, e.g\. data\.classes=20-39",
    ),
    (5, r"data\.classes=5 is neither a list nor a range.*0\.\.99. Fix: write a list of class ids"),
]


@pytest.mark.parametrize(("value", "message"), REFUSED)
def test_bad_classes_are_refused_with_the_key_value_range_and_fix(value, message):
    with pytest.raises(ConfigError, match=message):
        CIFAR100DataModule(NO_DATA, classes=value)
    with pytest.raises(ConfigError, match=message):
        GPUResidentCIFAR100DataModule(NO_DATA, device="cpu", classes=value)


def test_class_subset_and_classes_together_are_refused():
    with pytest.raises(
        ConfigError, match=r"data\.class_subset=20 and data\.classes='20-39' are both set.*Fix: set one"
    ):
        CIFAR100DataModule(NO_DATA, class_subset=20, classes="20-39")


def test_class_subset_beyond_the_data_set_is_refused_before_any_data_is_read():
    with pytest.raises(
        ConfigError, match=r"data\.class_subset=101 but the data set has 100 classes.*2\.\.100"
    ):
        CIFAR100DataModule(NO_DATA, class_subset=101)
    with pytest.raises(ConfigError, match=r"data\.class_subset=1 keeps fewer than 2 classes"):
        CIFAR100DataModule(NO_DATA, class_subset=1)


def test_the_config_check_refuses_bad_classes_before_any_work(tmp_path: Path):
    def problems(*overrides: str) -> str:
        with pytest.raises(ConfigError) as err:
            validate(compose_config(["data=cifar100", *overrides], tmp_path))
        return str(err.value)

    assert (
        "data.classes=[5, 100] holds 100, outside the data set's ids; class ids are ints in 0..99"
        in problems("data.classes=[5,100]")
    )
    assert "data.classes=[5, 5] holds 5 more than once" in problems("data=cifar100_gpu", "data.classes=[5,5]")
    assert "are both set" in problems("data.classes=20-39", "data.class_subset=20")
    assert "data.class_subset=200 but the data set has 100 classes" in problems("data.class_subset=200")
    # digits have 10 classes; the range form on the command line is a string
    with pytest.raises(ConfigError, match=r"holds 10, outside .*0\.\.9\. Fix"):
        validate(compose_config(["+data.classes=[0,10]"], tmp_path))
    validate(compose_config(["data=cifar100", "data.classes=20-39"], tmp_path))
    validate(compose_config(["data=cifar100", "data.classes=[39,20,77]"], tmp_path))


def test_an_image_folder_bounds_the_ids_by_its_folders(tmp_path: Path):
    for split in ("train", "val"):
        for name in ("ant", "bee", "cat"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((16, 16, 3), i, np.uint8)).save(tmp_path / split / name / f"{i}.png")
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, classes=[2, 0])  # its count is not known yet
    dm.setup("fit")
    assert dm.label_names == ["cat", "ant"] and dm.train_set.labels.tolist() == [1, 1, 0, 0]
    with pytest.raises(ConfigError, match=r"holds 3, outside .*0\.\.2"):
        ImageFolderDataModule(str(tmp_path), image_size=8, classes=[3, 0]).setup("fit")


# -- remapping and equivalence --------------------------------------------------------------------------


def _original_ids(dm, dataset) -> np.ndarray:
    return dataset.source.labels[dataset.indices]


def test_labels_are_remapped_in_the_given_order_and_subsampled_per_class():
    picked = [7, 2, 5]
    dm = DigitsDataModule(image_size=8, classes=picked, train_per_class=10, val_per_class=4)
    dm.setup("fit")
    assert dm.classes == (7, 2, 5) and dm.num_classes == 3 and dm.label_names == ["7", "2", "5"]
    for dataset, per_class in ((dm.train_set, 10), (dm.val_set, 4)):
        assert np.bincount(dataset.labels).tolist() == [per_class] * 3
        np.testing.assert_array_equal(np.array(picked)[dataset.labels], _original_ids(dm, dataset))


def _same_data(a, b) -> None:
    for name in ("train_set", "val_set", "test_set"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x.indices, y.indices)
            np.testing.assert_array_equal(x.labels, y.labels)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"train_per_class": 20, "val_per_class": 5, "split_seed": 3},
        {"val_source": "holdout", "holdout_per_class": 6, "val_per_class": 3},
    ],
)
def test_class_subset_n_equals_the_classes_0_to_n_minus_1(options):
    by_subset = DigitsDataModule(image_size=8, class_subset=4, **options)
    by_list = DigitsDataModule(image_size=8, classes=[0, 1, 2, 3], **options)
    by_range = DigitsDataModule(image_size=8, classes="0-3", **options)
    for dm in (by_subset, by_list, by_range):
        dm.setup("fit")
    _same_data(by_subset, by_list)
    _same_data(by_subset, by_range)
    assert by_subset.classes == by_list.classes == (0, 1, 2, 3)


def test_holdout_and_subsampling_are_per_class_and_deterministic():
    options = {"classes": [9, 0, 4], "val_source": "holdout", "holdout_per_class": 5, "train_per_class": 30}
    a, b = DigitsDataModule(image_size=8, **options), DigitsDataModule(image_size=8, **options)
    a.setup("fit")
    b.setup("fit")
    _same_data(a, b)
    assert np.bincount(a.val_set.labels).tolist() == [5, 5, 5]
    assert np.bincount(a.train_set.labels).tolist() == [30, 30, 30]
    assert set(a.test_set.labels.tolist()) == {0, 1, 2}
    assert not set(a.val_set.indices) & set(a.train_set.indices)  # held-out images are not trained on
    np.testing.assert_array_equal(np.array([9, 0, 4])[a.test_set.labels], _original_ids(a, a.test_set))


def test_the_gpu_resident_module_serves_the_remapped_labels(tmp_path: Path):
    root = write_fake_cifar(tmp_path, n=300).parent
    kwargs = {"check_sizes": False, "classes": "20-22", "batch_size": 4, "views": 2}
    dm = GPUResidentCIFAR100DataModule(root, device="cpu", **kwargs)
    ordinary = CIFAR100DataModule(root, **kwargs)
    ys = torch.cat([y for _, y, _ in dm.train_dataloader()])
    assert sorted(ys.tolist()) == [0] * 3 + [1] * 3 + [2] * 3
    assert torch.equal(next(iter(dm.val_dataloader()))[1], next(iter(ordinary.val_dataloader()))[1])
    np.testing.assert_array_equal(dm.train_set.indices, ordinary.train_set.indices)


# -- real CIFAR-100: the images really are those classes -------------------------------------------------


@pytest.mark.cifar
@needs_cifar
def test_real_cifar_classes_are_the_raw_pickles_images_and_labels():
    picked = [39, 20, 77, 3]
    dm = CIFAR100DataModule(str(SHARED_DATA), classes=picked, train_per_class=5)
    dm.setup("fit")
    assert dm.classes == tuple(picked) and dm.num_classes == 4
    assert dm.label_names == [dm.class_names[c] for c in picked]
    for split, dataset, per_class in (("train", dm.train_set, 5), ("test", dm.val_set, 100)):
        with (SHARED_DATA / "cifar-100-python" / split).open("rb") as f:
            raw = pickle.load(f, encoding="latin1")
        assert np.bincount(dataset.labels).tolist() == [per_class] * 4
        raw_labels = np.asarray(raw["fine_labels"])[dataset.indices]
        np.testing.assert_array_equal(raw_labels, np.array(picked)[dataset.labels])
        raw_images = raw["data"][dataset.indices].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(dataset.source.images[dataset.indices], raw_images)
    _, y, idx = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(y.numpy(), dm.val_set.labels[idx.numpy()])

    first = CIFAR100DataModule(str(SHARED_DATA), class_subset=10, train_per_class=5)
    listed = CIFAR100DataModule(str(SHARED_DATA), classes=list(range(10)), train_per_class=5)
    first.setup("fit")
    listed.setup("fit")
    _same_data(first, listed)


# -- named in the summary and the report ----------------------------------------------------------------


@pytest.mark.slow
def test_the_summary_and_the_report_name_the_classes_a_run_kept(tmp_path):
    from helpers import QUIET, SCRATCH_RUN
    from pckd_lightning.report.collect import collect_runs, dataset_name
    from pckd_lightning.run import fit

    summary = fit(
        compose_config([*SCRATCH_RUN, *QUIET, "+data.classes=[7,2,5]"], output_dir=tmp_path / "run")
    )
    assert summary["classes"] == [7, 2, 5]
    (run,) = collect_runs(tmp_path)
    assert "classes [7, 2, 5]" in run.dataset
    every = fit(compose_config([*SCRATCH_RUN, *QUIET], output_dir=tmp_path / "all"))
    assert every["classes"] is None  # all ten digits: nothing to name
    assert "classes 20-39" in dataset_name({"data": {"_target_": "x.CIFAR100DataModule", "classes": "20-39"}})
    listed = {"_target_": "x.CIFAR100DataModule", "classes": [20, 21, 22]}
    assert "classes 20-22" in dataset_name({"data": listed})
