"""The README's "write your own loss term, plug in your own model" example runs as written, through the app."""

from __future__ import annotations

import csv
import re
import shlex
import sys

import pytest

from helpers import REPO, compose_config
from pckd_lightning.models import list_models, unregister_model
from pckd_lightning.run import fit


def readme_example() -> tuple[str, list[list[str]]]:
    """The section's Python block (my_kd.py) and the overrides of each of its pckd-train commands."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Write your own loss term, plug in your own model", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return code, [words[1:] for words in commands if words]


@pytest.mark.slow
def test_the_readme_example_term_and_model_train_through_the_app(tmp_path, monkeypatch, request):
    code, (overrides, tapped) = readme_example()
    (tmp_path / "my_kd.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_kd", raising=False)
    # the example registers tiny_cnn: it is forgotten after the test, so the zoo is as before
    zoo = set(list_models())

    def forget_new_models() -> None:
        for name in set(list_models()) - zoo:
            unregister_model(name)

    request.addfinalizer(forget_new_models)
    quick = [
        "data.image_size=8",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "model.train_teacher_if_missing.max_epochs=1",
        "logger=none",
    ]
    summary = fit(compose_config([*overrides, *quick], output_dir=tmp_path / "run"))
    assert summary["terms"] == {"ce": 0.1, "kd": 0.9, "cos": 0.5}
    with (tmp_path / "run" / "csv" / "metrics.csv").open(newline="") as f:
        values = [float(r["train/cos"]) for r in csv.DictReader(f) if r.get("train/cos")]
    assert len(values) == 1 and 0 <= values[0] <= 2  # 1 - cos lies in [0, 2]

    from pckd_lightning.models import create_model

    model = create_model("tiny_cnn", num_classes=10)  # registered by the import
    assert model.classifier_layer.out_features == 10

    # PCKD into the plain module through its taps; its 32-wide embedding cannot be compared with resnet20's 64
    summary = fit(compose_config([*tapped, *quick], output_dir=tmp_path / "tapped"))
    assert summary["student"] == "my_kd.MyNet"
    assert set(summary["terms"]) == {"ce", "kd", "category_contrast", "feature_align"}
    assert set(summary["skipped_terms"]) == {"center_align"}
