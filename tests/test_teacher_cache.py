"""The teacher-output cache's storage: float16 values per (epoch, image, view), keyed, filled row by row."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pckd_lightning.distillation.teacher_cache import FILLED, GIB, CacheLayout, TeacherCache
from pckd_lightning.errors import ConfigError

LAYOUT = CacheLayout(epochs=3, images=10, views=2, outputs={"logits": 5, "pooled": 4})
KEY = {"teacher_sha256": "ab" * 32, "data.aug_seed": 0}


def outputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "logits": torch.randn(batch * 2, 5, generator=g) * 7,
        "pooled": torch.rand(batch * 2, 4, generator=g),
    }


def test_values_come_back_as_float16_rounds_them_in_the_steps_image_major_order(tmp_path):
    cache = TeacherCache(tmp_path, KEY, LAYOUT, max_gib=1)
    images, written = torch.tensor([7, 2, 4]), outputs(3)
    cache.write(1, images, written)
    back = cache.read(1, images)
    for name, values in written.items():
        assert back[name].dtype == torch.float16 and back[name].shape == values.shape
        assert torch.equal(back[name], values.half())
    # rows by image: image 2's views are rows 2..3 of the batch, whatever order it is read in
    assert torch.equal(cache.read(1, torch.tensor([2]))["logits"], written["logits"][2:4].half())


def test_only_written_rows_count_as_filled_and_another_process_sees_them(tmp_path):
    cache = TeacherCache(tmp_path, KEY, LAYOUT, max_gib=1)
    cache.write(0, torch.tensor([0, 1]), outputs(2))
    assert cache.filled(0, torch.tensor([0, 1])) and not cache.filled(0, torch.tensor([1, 2]))
    assert not cache.filled(1, torch.tensor([0]))  # another epoch
    other = TeacherCache(tmp_path, KEY, LAYOUT, max_gib=1)  # e.g. another DDP rank, or the next run
    other.write(0, torch.tensor([2]), outputs(1, seed=1))
    assert cache.filled(0, torch.tensor([0, 1, 2]))
    assert cache.filled_fraction() == pytest.approx(3 / 30)


def test_a_writer_killed_before_marking_its_rows_leaves_them_unfilled(tmp_path):
    cache = TeacherCache(tmp_path, KEY, LAYOUT, max_gib=1)
    cache.write(0, torch.tensor([3]), outputs(1))
    flags = np.load(tmp_path / FILLED, mmap_mode="r+")
    flags[0, 3] = 0  # values written, flag not: what a kill between the two leaves
    flags.flush()
    assert not TeacherCache(tmp_path, KEY, LAYOUT, max_gib=1).filled(0, torch.tensor([3]))


def test_a_cache_written_for_other_settings_is_refused_naming_what_differs(tmp_path):
    TeacherCache(tmp_path, KEY, LAYOUT, max_gib=1)
    other_teacher = KEY | {"teacher_sha256": "cd" * 32}
    with pytest.raises(
        ConfigError, match=r"teacher_sha256: 'abab.*' \(cache\) vs 'cdcd.*' \(run\).*another folder"
    ):
        TeacherCache(tmp_path, other_teacher, LAYOUT, max_gib=1)
    with pytest.raises(ConfigError, match=r"layout: .*'epochs': 3.*'epochs': 4"):
        TeacherCache(tmp_path, KEY, CacheLayout(4, 10, 2, {"logits": 5, "pooled": 4}), max_gib=1)
    assert json.loads((tmp_path / "meta.json").read_text())["key"] == KEY


def test_the_size_is_computed_and_capped_before_anything_is_written(tmp_path):
    assert LAYOUT.bytes == 3 * 10 * 2 * (5 + 4) * 2 + 3 * 10
    big = CacheLayout(epochs=240, images=50_000, views=4, outputs={"logits": 100, "pooled": 256})
    assert big.bytes / GIB == pytest.approx(
        31.8, abs=0.1
    )  # full CIFAR-100, PCKD, resnet32x4's 256-d embedding
    with pytest.raises(ConfigError, match=r"31\.\d\d GiB.*over teacher\.cache_max_gib=8"):
        TeacherCache(tmp_path / "big", KEY, big, max_gib=8)
    assert not (tmp_path / "big").exists()
