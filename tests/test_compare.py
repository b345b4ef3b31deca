"""The side-by-side benchmark harness, on its tiny profile (a few steps on real CIFAR-100)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import REPO


def load_compare():
    spec = importlib.util.spec_from_file_location("compare", REPO / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.cifar
def test_tiny_profile_trains_every_method_and_writes_the_table(tmp_path, cifar_root, capsys):
    compare = load_compare()
    compare.main(["--profile", "tiny", "--root", str(cifar_root), "--out", str(tmp_path)])
    report = (tmp_path / "report" / "report.md").read_text()
    for row in ("teacher", "student (scratch)", "kd", "dkd", "pckd"):
        assert row in report, row
    assert "resnet14" in report and "resnet8" in report
    assert (tmp_path / "report" / "curves.png").is_file()
    summaries = list(tmp_path.rglob("summary.json"))
    assert len(summaries) == 1 + 4 * 2  # teacher + 4 methods x 2 seeds
    # a second call finds every run finished and only rebuilds the report
    compare.main(["--profile", "tiny", "--root", str(cifar_root), "--out", str(tmp_path)])
    assert capsys.readouterr().out.count("done before, skipped") == 9


def test_every_profile_composes(tmp_path):
    compare = load_compare()
    for name, profile in compare.PROFILES.items():
        teacher, student = profile.pairs[0]
        model = compare.pair_config(teacher, student)
        overrides = [f"data={profile.data}", *profile.overrides, *model, "distill=pckd"]
        cfg = compare.compose_run(overrides, tmp_path)
        assert cfg.model.student.name == student, name
