"""Bad data fails early with a DataError (or ConfigError) whose message names the problem AND the fix.

Every case checks the message's content, not only the type: the offending path where there is one,
what was expected, and the ``Fix:``/``Use ...`` part that says what to change. Data is tiny and fake
(pickles and PNGs written to ``tmp_path``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import dump_pickle, write_fake_cifar
from pckd_lightning.data import (
    CIFAR100DataModule,
    DigitsDataModule,
    ImageFolderDataModule,
    per_class_subsample,
    read_cifar100,
)
from pckd_lightning.data.base import MIN_IMAGE_SIZE
from pckd_lightning.errors import ConfigError, DataError
from pckd_lightning.models import create_model

CIFAR_FIX = ("Fix: point data.root at the folder that contains 'cifar-100-python'", "data.download=true")
CIFAR_EXPECTED_SPLIT = "expected a dict with 'data' (uint8, 50000 x 3072) and 'fine_labels'"
#: a file that exists but cannot be read: delete it first, since a download skips existing files
CIFAR_CORRUPT_FIX = ("The file is corrupt", "delete the folder", "data.download=true", "downloading skips")
IMAGEFOLDER_FIX = "Fix: point data.root at the folder that holds train/ and val/"


def assert_message(err: pytest.ExceptionInfo, *needles: str) -> str:
    """Every needle occurs in the error's message; returns the message."""
    msg = str(err.value)
    missing = [n for n in needles if n not in msg]
    assert not missing, f"message lacks {missing}:\n{msg}"
    return msg


# -- tiny fake CIFAR-100 ---------------------------------------------------------------------------------


def load_cifar(root: Path) -> None:
    """Everything a run reads: both splits and the class names."""
    dm = CIFAR100DataModule(str(root), check_sizes=False)
    dm.setup()
    assert dm.class_names


@pytest.fixture
def cifar(tmp_path: Path) -> Path:
    return write_fake_cifar(tmp_path)


def test_sanity_the_fake_cifar_loads(cifar: Path):
    load_cifar(cifar.parent)


def test_missing_cifar_folder_names_the_folder_and_how_to_get_the_data(tmp_path: Path):
    with pytest.raises(DataError) as err:
        CIFAR100DataModule(str(tmp_path / "nowhere")).setup()
    assert_message(err, str(tmp_path / "nowhere" / "cifar-100-python"), "not found", *CIFAR_FIX)


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_missing_cifar_file_names_the_file(cifar: Path, name: str):
    (cifar / name).unlink()
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, f"missing file {cifar / name}", "expected a dict with", *CIFAR_FIX)


def test_cifar_file_that_is_a_folder_says_so(cifar: Path):
    (cifar / "train").unlink()
    (cifar / "train").mkdir()
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, f"{cifar / 'train'} is not a file", CIFAR_EXPECTED_SPLIT, *CIFAR_FIX)


@pytest.mark.parametrize("name", ["train", "test", "meta"])
def test_truncated_pickle_names_the_file_and_the_fix(cifar: Path, name: str):
    """An interrupted copy or download: the first half of a valid pickle."""
    whole = (cifar / name).read_bytes()
    (cifar / name).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    msg = assert_message(err, f"cannot unpickle {cifar / name}", "expected a dict with", *CIFAR_CORRUPT_FIX)
    assert "truncated" in msg or "Ran out of input" in msg or "EOF" in msg


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "EOFError"),
        (b"not a pickle at all", "cannot unpickle"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "cannot unpickle"),
    ],
    ids=["empty", "text", "png"],
)
def test_malformed_file_names_the_file_and_the_fix(cifar: Path, content: bytes, detail: str):
    (cifar / "train").write_bytes(content)
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, str(cifar / "train"), detail, CIFAR_EXPECTED_SPLIT, *CIFAR_CORRUPT_FIX)


def _patch(split: str, **changes) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        with (folder / split).open("rb") as f:
            d = pickle.load(f, encoding="latin1")
        d.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del d[key]
        dump_pickle(folder / split, d)

    return mutate


@pytest.mark.parametrize(
    ("split", "mutate", "detail"),
    [
        ("train", lambda f: dump_pickle(f / "train", [1, 2, 3]), "holds a list"),
        ("train", _patch("train", data=None), "lack 'data' or 'fine_labels'"),
        ("test", _patch("test", fine_labels=None), "lack 'data' or 'fine_labels'"),
        ("train", _patch("train", data=np.zeros((100, 3000), dtype=np.uint8)), "'data' is uint8 (100, 3000)"),
        (
            "train",
            _patch("train", data=np.zeros((100, 3, 1024), dtype=np.uint8)),
            "'data' is uint8 (100, 3, 1024)",
        ),
        ("test", _patch("test", data=np.zeros((100, 32, 32, 3), dtype=np.uint8)), "(100, 32, 32, 3)"),
        ("test", _patch("test", data=np.zeros((100, 3072), dtype=np.float32)), "'data' is float32"),
        ("train", _patch("train", data=[[0] * 3072] * 100), "'data' is list"),
        ("train", _patch("train", fine_labels=list(range(50))), "'fine_labels' has shape (50,)"),
        ("train", _patch("train", fine_labels=np.zeros((100, 1), int)), "'fine_labels' has shape (100, 1)"),
        ("test", _patch("test", fine_labels=[i + 0.5 for i in range(100)]), "dtype float64"),
    ],
    ids=[
        "not-a-dict",
        "no-data",
        "no-labels",
        "row-width",
        "3d-data",
        "hwc-data",
        "float-data",
        "list-data",
        "fewer-labels",
        "2d-labels",
        "float-labels",
    ],
)
def test_wrong_contents_or_shapes_name_the_file_what_was_found_and_expected(
    cifar: Path, split, mutate, detail
):
    mutate(cifar)
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, f"{cifar / split}", detail, "expected a dict with 'data' (uint8", *CIFAR_FIX)


@pytest.mark.parametrize(
    ("labels", "detail"),
    [
        ([*range(99), 100], "range over [0, 100]"),
        ([-1, *range(1, 100)], "range over [-1, 99]"),
        ([*range(99), 255], "range over [0, 255]"),
    ],
)
def test_labels_out_of_range_name_the_range_found_and_expected(cifar: Path, labels, detail):
    _patch("train", fine_labels=labels)(cifar)
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, str(cifar / "train"), detail, "ints in [0, 99]", *CIFAR_FIX)


def test_split_missing_a_class_names_it(cifar: Path):
    _patch("test", fine_labels=[i % 99 for i in range(100)])(cifar)  # class 99 never occurs
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, str(cifar / "test"), "1 of the 100 classes have no image (e.g. class 99)", *CIFAR_FIX)


def test_bad_class_names_file(cifar: Path):
    dump_pickle(cifar / "meta", {"fine_label_names": ["only", "three", "names"]})
    with pytest.raises(DataError) as err:
        load_cifar(cifar.parent)
    assert_message(err, str(cifar / "meta"), "bad 'fine_label_names'", "(100 strings)", *CIFAR_FIX)


def test_partial_copy_with_sizes_checked_says_how_many_images_and_the_fix(cifar: Path):
    with pytest.raises(DataError) as err:
        read_cifar100(cifar.parent, "train")
    assert_message(
        err, str(cifar / "train"), "holds 100 images (a partial copy?)", "50000 x 3072", *CIFAR_FIX
    )


# -- subsampling: an empty class -------------------------------------------------------------------------


@pytest.mark.parametrize("per_class", [0, -3])
def test_empty_class_after_subsampling_names_the_option_the_class_and_the_fix(cifar: Path, per_class: int):
    dm = CIFAR100DataModule(str(cifar.parent), check_sizes=False, train_per_class=per_class)
    with pytest.raises(DataError) as err:
        dm.setup()
    assert_message(
        err,
        f"data.train_per_class={per_class} leaves class 0 ('c0') with no sample",
        "the split holds 1 of it",
        "Use data.train_per_class >= 1",
        "data.train_per_class=null to keep all samples",
    )


def test_empty_class_of_the_validation_split_through_digits():
    with pytest.raises(DataError) as err:
        DigitsDataModule(val_per_class=0, image_size=8).setup()
    assert_message(err, "data.val_per_class=0 leaves class 0 ('0')", "Use data.val_per_class >= 1")


def test_class_absent_from_the_labels_is_named_with_a_hint_to_check_the_data():
    labels = np.array([0, 0, 2, 2, 3])  # class 1 has no sample at all
    with pytest.raises(DataError) as err:
        per_class_subsample(labels, 5, num_classes=4, option="data.train_per_class", class_names=list("abcd"))
    assert_message(
        err,
        "leaves class 1 ('b') with no sample (the split holds 0 of it)",
        "check that the data contains every class",
    )


# -- ImageFolder -----------------------------------------------------------------------------------------


def write_image_folder(root: Path, classes=("cat", "dog"), val_classes=None, per_class: int = 2) -> Path:
    rng = np.random.default_rng(0)
    for split, names in (("train", classes), ("val", classes if val_classes is None else val_classes)):
        for cls in names:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def test_sanity_the_fake_image_folder_loads(tmp_path: Path):
    dm = ImageFolderDataModule(str(write_image_folder(tmp_path)), image_size=8, batch_size=2)
    x, _, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 8, 8)


def test_missing_image_folder_root_names_the_split_and_the_fix(tmp_path: Path):
    with pytest.raises(DataError) as err:
        ImageFolderDataModule(str(tmp_path / "nowhere"), image_size=32).setup()
    assert_message(
        err, f"{tmp_path / 'nowhere' / 'train'} not found", "root/train/<class>/<image>", IMAGEFOLDER_FIX
    )


def test_image_folder_without_class_folders(tmp_path: Path):
    root = write_image_folder(tmp_path)
    for p in (root / "val" / "cat").iterdir():
        p.unlink()
    (root / "val" / "cat").rmdir()
    for p in (root / "val" / "dog").iterdir():
        p.rename(root / "val" / p.name)  # images loose in val/, no class folder
    (root / "val" / "dog").rmdir()
    with pytest.raises(DataError) as err:
        ImageFolderDataModule(str(root), image_size=32).setup()
    assert_message(err, f"{root / 'val'} has no class folders", IMAGEFOLDER_FIX)


@pytest.mark.parametrize(
    ("val_classes", "detail"),
    [
        (("cat", "bird"), "only in train: ['dog'], only in val: ['bird']"),
        (("cat",), "only in train: ['dog'], only in val: []"),
        (("cat", "dog", "emu"), "only in train: [], only in val: ['emu']"),
        (("Cat", "dog"), "only in train: ['cat'], only in val: ['Cat']"),
    ],
    ids=["renamed", "missing-in-val", "extra-in-val", "case"],
)
def test_mismatched_class_folders_name_both_sides_and_the_fix(tmp_path: Path, val_classes, detail):
    root = write_image_folder(tmp_path, val_classes=val_classes)
    with pytest.raises(DataError) as err:
        ImageFolderDataModule(str(root), image_size=32).setup()
    assert_message(
        err,
        f"class folders of {root / 'train'} and {root / 'val'} differ",
        detail,
        "Fix: rename, add or remove class folders so that train/ and val/ hold the same class names",
    )


def test_class_folder_without_images_names_the_class_and_the_fix(tmp_path: Path):
    root = write_image_folder(tmp_path)
    for p in (root / "val" / "dog").iterdir():
        p.rename(p.with_suffix(".txt"))  # no file ImageFolder would read
    with pytest.raises(DataError) as err:
        ImageFolderDataModule(str(root), image_size=32).setup()
    assert_message(err, f"cannot read {root / 'val'}", "dog", ".png", IMAGEFOLDER_FIX)


@pytest.mark.parametrize("content", [b"not an image", None], ids=["garbage", "truncated"])
def test_unreadable_image_names_the_file_and_the_fix(tmp_path: Path, content):
    root = write_image_folder(tmp_path, per_class=1)
    bad = root / "train" / "dog" / "0.png"
    if content is None:  # the first half of a valid PNG (an interrupted copy)
        whole = bad.read_bytes()
        content = whole[: len(whole) // 2]
    bad.write_bytes(content)
    dm = ImageFolderDataModule(str(root), image_size=8, batch_size=2)
    with pytest.raises(DataError) as err:
        next(iter(dm.train_dataloader()))
    assert_message(
        err, f"cannot read the image {bad}", "Fix: replace the file with a readable image", "delete it"
    )


# -- image sizes the models cannot take ------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 4, MIN_IMAGE_SIZE - 1, 16.5, True, "32"])
@pytest.mark.parametrize("make", ["digits", "imagefolder"])
def test_image_size_below_what_the_models_take_names_the_minimum_and_the_fix(tmp_path: Path, make, size):
    with pytest.raises(ConfigError) as err:
        if make == "digits":
            DigitsDataModule(image_size=size)
        else:
            ImageFolderDataModule(str(tmp_path), image_size=size)
    assert_message(
        err,
        f"data.image_size={size!r}",
        f"at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}",
        f"Fix: set data.image_size to an int >= {MIN_IMAGE_SIZE}",
    )


@pytest.mark.parametrize("size", [16, 64])
def test_cifar_takes_its_one_image_size_and_names_it(cifar: Path, size):
    """data.image_size has one home in every data config (issue 25); CIFAR-100's files hold 32x32 only."""
    assert CIFAR100DataModule(str(cifar.parent), image_size=32).image_size == 32
    with pytest.raises(ConfigError) as err:
        CIFAR100DataModule(str(cifar.parent), image_size=size)
    assert_message(err, f"data.image_size={size}", "32x32", "Fix: leave data.image_size at 32")


def test_the_minimum_image_size_is_the_smallest_every_model_takes():
    """The VGGs pool three times before their last block: 8x8 reaches it at 1x1, 7x7 at 0x0."""
    vgg = create_model("vgg8", 10).eval()
    with torch.no_grad():
        assert vgg(torch.zeros(2, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)).shape == (2, 10)
        with pytest.raises(RuntimeError):
            vgg(torch.zeros(2, 3, MIN_IMAGE_SIZE - 1, MIN_IMAGE_SIZE - 1))
    dm = DigitsDataModule(image_size=MIN_IMAGE_SIZE, batch_size=4, train_per_class=1)
    x, _, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, MIN_IMAGE_SIZE, MIN_IMAGE_SIZE)
