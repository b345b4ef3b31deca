"""The teacher-output cache's storage: float16 values per (epoch, image, view), keyed, filled row by row."""

from __future__ import annotations

import itertools
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


def test_a_cifar_cache_written_before_data_image_size_had_a_home_is_this_runs(tmp_path):
    """CIFAR-100's data section declares image_size (32, its one size) since issue 25; a cache keyed before
    then holds the same teacher outputs, and another image size is still another key."""
    data = {"_target_": "pckd_lightning.data.CIFAR100DataModule", "views": 2}
    TeacherCache(tmp_path, KEY | {"data": data}, LAYOUT, max_gib=1)
    TeacherCache(tmp_path, KEY | {"data": data | {"image_size": 32}}, LAYOUT, max_gib=1)
    with pytest.raises(ConfigError, match=r"data: .*\(cache\) vs .*'image_size': 16"):
        TeacherCache(tmp_path, KEY | {"data": data | {"image_size": 16}}, LAYOUT, max_gib=1)


def test_the_size_is_computed_and_capped_before_anything_is_written(tmp_path):
    assert LAYOUT.bytes == 3 * 10 * 2 * (5 + 4) * 2 + 3 * 10
    big = CacheLayout(epochs=240, images=50_000, views=4, outputs={"logits": 100, "pooled": 256})
    assert big.bytes / GIB == pytest.approx(
        31.8, abs=0.1
    )  # full CIFAR-100, PCKD, resnet32x4's 256-d embedding
    with pytest.raises(ConfigError, match=r"31\.\d\d GiB.*over teacher\.cache_max_gib=8"):
        TeacherCache(tmp_path / "big", KEY, big, max_gib=8)
    assert not (tmp_path / "big").exists()


# -- through the app -------------------------------------------------------------------------------------


def cached_run(tmp_path, name: str, method: str = "kd", *extra: str) -> tuple[dict, list[dict[str, str]]]:
    """Two epochs of two steps of ``method`` on the digits pair, one augmentation stream, the cache in
    ``tmp_path/cache``; the summary and the CSV rows."""
    import csv

    from helpers import QUIET, compose_config, save_teacher
    from pckd_lightning.run import fit

    teacher = tmp_path / "teacher.pth"
    if not teacher.exists():
        save_teacher(teacher, "resnet20", 10)
    overrides = [
        f"distill={method}",
        f"model.teacher.checkpoint={teacher}",
        "data.image_size=8",
        "data.aug_seed=3",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        *QUIET,
        *extra,
    ]
    summary = fit(compose_config(overrides, output_dir=tmp_path / name))
    with open(tmp_path / name / "csv" / "metrics.csv") as f:
        return summary, [r for r in csv.DictReader(f) if r.get("train/loss")]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kd", "pckd"])
def test_a_cached_run_trains_as_a_live_one_up_to_float16_and_as_the_run_that_filled_it(tmp_path, method):
    """KD reads the teacher's logits, PCKD its logits and embedding: the run that fills the cache and the
    runs that read it train identically; a live run differs only by the float16 rounding of those outputs."""
    cache = f"module.teacher_options.cache={tmp_path / 'cache'}"
    live, live_rows = cached_run(tmp_path, "live", method)
    first, first_rows = cached_run(tmp_path, "first", method, cache)
    second, second_rows = cached_run(tmp_path, "second", method, cache, "seed=0")
    assert live["teacher_cache"] is None and first["teacher_cache"] == str(tmp_path / "cache")
    for a, b in zip(first_rows, second_rows, strict=True):
        assert a["train/loss"] == b["train/loss"]  # bit-identical: both read the stored outputs
    # the first epoch starts from the same weights: only the rounding of the teacher's outputs differs; later
    # the weights differ by what that rounding changed in the updates, which PCKD's large early losses amplify
    # (0.7 % by epoch 2 with one intra-op thread, 0.1 % with two)
    for epoch, (a, b) in enumerate(zip(live_rows, first_rows, strict=True)):
        assert float(a["train/loss"]) == pytest.approx(
            float(b["train/loss"]), rel=2e-3 if epoch == 0 else 2e-2
        )
    state = {k: torch.load(s["student_weights"])["model"] for k, s in (("first", first), ("second", second))}
    assert all(torch.equal(state["first"][k], state["second"][k]) for k in state["first"])


@pytest.mark.slow
def test_the_second_run_does_not_run_the_teacher_on_training_batches(tmp_path, monkeypatch):
    from pckd_lightning.distillation.step import DistillStep

    cache = f"module.teacher_options.cache={tmp_path / 'cache'}"
    cached_run(tmp_path, "first", "kd", cache)
    calls = []
    forward = DistillStep.teacher_forward
    monkeypatch.setattr(
        DistillStep, "teacher_forward", lambda self, x, **kw: calls.append(1) or forward(self, x, **kw)
    )
    cached_run(tmp_path, "second", "kd", cache, "module.teacher_options.measure=false")
    assert calls == []


@pytest.mark.slow
def test_a_method_reading_the_teachers_feature_maps_runs_it_live_and_says_so(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        summary, _ = cached_run(tmp_path, "at", "at", f"module.teacher_options.cache={tmp_path / 'cache'}")
    assert summary["teacher_cache"] is None
    assert "read the teacher's feature maps, so it runs live" in caplog.text
    assert not (tmp_path / "cache").exists()


def test_a_cache_without_one_augmentation_stream_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"needs one augmentation stream \(data\.aug_seed\)"):
        cached_run(
            tmp_path, "run", "kd", f"module.teacher_options.cache={tmp_path / 'c'}", "data.aug_seed=null"
        )
    assert not (tmp_path / "c").exists()


def test_the_key_names_the_stream_format_the_teachers_build_and_an_image_folders_root(tmp_path, caplog):
    """What a key cannot see is versioned (the views a seed draws); the teacher's build options are in it (one
    file built two ways gives two sets of outputs), and so is the root where it is the data set itself."""
    from types import SimpleNamespace

    import torchvision

    from helpers import compose_config, save_teacher
    from pckd_lightning.run.build import instantiate
    from pckd_lightning.run.cache import STREAM_FORMAT, build_teacher_cache

    teacher_file = save_teacher(tmp_path / "teacher.pth", "resnet20", 10)
    teacher, count = None, itertools.count()

    def cache_for(datamodule: object, *extra: str) -> TeacherCache | None:
        nonlocal teacher
        overrides = [
            "distill=kd",
            "data=cifar100",  # a data set kept at data.root (not read here)
            f"model.teacher.checkpoint={teacher_file}",
            "data.aug_seed=3",
            f"module.teacher_options.cache={tmp_path / 'caches' / str(next(count))}",
            *extra,
        ]
        cfg = compose_config(overrides, output_dir=tmp_path / "run")
        teacher = teacher or instantiate(cfg.model.teacher, num_classes=10)
        return build_teacher_cache(cfg, datamodule, teacher, {})

    data = SimpleNamespace(train_labels=[0] * 10, views=1, num_classes=10)  # a data module of the user's own
    cifar = type("Cifar", (SimpleNamespace,), {"root_is_data": False})(**vars(data))
    key = cache_for(cifar).key
    assert (key["stream_format"], key["torchvision"]) == (
        STREAM_FORMAT,
        torchvision.__version__.split("+")[0],
    )
    assert key["teacher"] == {"_target_": "pckd_lightning.distillation.load_teacher", "name": "resnet20"}
    assert "root" not in key["data"]
    assert "holdout_per_class" not in key["data"]  # validation reads the test split: the holdout is unused
    assert cache_for(data).key["data"] == key["data"] | {"root": "./data"}
    caplog.set_level("WARNING")
    assert cache_for(cifar, "+trainer.overfit_batches=2") is None  # its sampler ignores the stream
    assert "overfit_batches replaces the training sampler" in caplog.text
