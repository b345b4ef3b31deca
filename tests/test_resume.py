"""A run interrupted after epoch k and resumed ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from helpers import compose_config
from pckd_lightning.run import fit

COMMON = [
    "model=digits_scratch_resnet8",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=1",
    "callbacks.progress_bar=null",
    "logger=none",
]


def final_state(summary: dict) -> dict[str, torch.Tensor]:
    return torch.load(summary["last_checkpoint"], weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("distill", ["ce", "pckd"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, distill):
    overrides = [*COMMON, f"distill={distill}"]
    if distill == "pckd":  # a teacher, trainable heads and the preview schedule all have to resume
        overrides = [o for o in overrides if not o.startswith("model=")]
        # trained once, into the first run's teacher cache, and shared by all three
        teacher = tmp_path / "straight" / "cache" / "teachers" / "teacher.pth"
        overrides += [
            "model.train_teacher_if_missing.max_epochs=1",
            f"model.train_teacher_if_missing.checkpoint={teacher}",
            "data.image_size=8",
        ]
    straight = fit(compose_config([*overrides, "trainer.max_epochs=3"], output_dir=tmp_path / "straight"))
    first = fit(compose_config([*overrides, "trainer.max_epochs=2"], output_dir=tmp_path / "part1"))
    resumed = fit(
        compose_config(
            [*overrides, "trainer.max_epochs=3", f"ckpt_path={first['last_checkpoint']}"],
            output_dir=tmp_path / "part2",
        )
    )
    assert resumed["epochs"] == straight["epochs"] == 3
    a, b = final_state(straight), final_state(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed["best_top1"] == straight["best_top1"]
