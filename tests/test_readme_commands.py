"""The README's commands run as written (issue 23): every ``pckd-train`` line of its bash blocks composes as
Hydra composes it (a sweep: its base config, then each of its jobs), and every ``pckd-report``, ``pckd-eval``
and ``benchmarks/compare.py`` line parses with its own argument parser, so that the manual cannot drift
from the code. Placeholders (``...``, ``<date>_<id>``) are filled in first, as a reader would."""

from __future__ import annotations

import argparse
import importlib
import itertools
import re
import shlex

import pytest
import tomllib
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode

from helpers import CONF_DIR, REPO, load_benchmark

#: what a reader puts in for the README's placeholders
PLACEHOLDERS = {"<task>": "pckd_resnet32x4_resnet8x4", "<date>_<id>": "2026-01-01_00-00-00_abcdef"}
#: ``key=...``: the value a reader would write (a bare ``...`` stands for more overrides and is dropped)
ELIDED_VALUES = {"experiment": "cifar100_pckd_resnet32x4_resnet8x4", "paths.data_dir": "../shared/data"}
#: commands the bash blocks may hold that this test does not run
NOT_CHECKED = {"make"}


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks, split as the shell splits it (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if words := shlex.split(line, comments=True):
                commands.append(words)
    return commands


def filled_in(words: list[str]) -> list[str]:
    """The command with the README's placeholders replaced by what a reader would type."""
    args = []
    for word in words:
        if word == "...":
            continue
        if word.endswith("=..."):
            key = word.removesuffix("=...")
            assert key in ELIDED_VALUES, f"add the README's {word} to ELIDED_VALUES"
            word = f"{key}={ELIDED_VALUES[key]}"
        for placeholder, value in PLACEHOLDERS.items():
            word = word.replace(placeholder, value)
        args.append(word)
    return args


def command_id(words: list[str]) -> str:
    return " ".join(words)[:90]


def job_values(override: Override) -> list[str]:
    """The values a sweep override takes, one per job; an Optuna interval is tried at its low end."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [override.input_line]
    if override.is_discrete_sweep():
        return [f"{key}={value}" for value in override.sweep_string_iterator()]
    return [f"{key}={override.value().start}"]


def compose_as_hydra(overrides: list[str], multirun: bool) -> int:
    """Compose ``train.yaml`` as ``pckd-train [-m] overrides`` does; returns the number of jobs composed.

    A sweep's base config comes first, from the overrides that are not swept (where a key that only the swept
    groups have fails), then each job as the launcher composes it, the sweeper's own search space included.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        if not multirun:
            loader.load_configuration("train", overrides, run_mode=RunMode.RUN)
            return 1
        base = loader.load_configuration("train", overrides, run_mode=RunMode.MULTIRUN)
        searched = [f"{key}={value}" for key, value in (base.hydra.sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create(config_loader=loader).parse_overrides([*searched, *overrides])
        jobs = list(itertools.product(*(job_values(o) for o in parsed)))
        for job in jobs:
            loader.load_sweep_config(base, list(job))
        return len(jobs)


class Parsed(Exception):
    """Raised in place of running a command once its arguments parsed."""


def dry_parse(main, argv: list[str], monkeypatch) -> argparse.Namespace:
    """``main(argv)`` stopped right after its parser accepted ``argv`` (a parse error exits 2 as usual)."""
    parse_args = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(parse_args(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    with pytest.raises(Parsed) as parsed:
        main(argv)
    return parsed.value.args[0]


def entry_point(name: str):
    """The function ``pyproject.toml`` installs as command ``name``."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[name].partition(":")
    return getattr(importlib.import_module(module), function)


COMMANDS = readme_commands()
TRAIN = [c for c in COMMANDS if c[0] == "pckd-train"]
PARSED = [c for c in COMMANDS if c[0] != "pckd-train" and c[0] not in NOT_CHECKED]


def test_the_readme_holds_the_commands_this_test_runs():
    assert len(TRAIN) >= 15 and {c[0] for c in PARSED} == {"pckd-report", "pckd-eval", "python"}
    assert any("-m" in c and any(w.startswith("experiment=glob(") for w in c) for c in TRAIN)


@pytest.mark.parametrize("words", TRAIN, ids=command_id)
def test_every_pckd_train_command_of_the_readme_composes(words):
    args = filled_in(words[1:])
    multirun = "-m" in args or "--multirun" in args
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    assert not [a for a in overrides if a.startswith("-")], "only -m and overrides are composed here"
    assert compose_as_hydra(overrides, multirun) >= 1


@pytest.mark.parametrize("words", PARSED, ids=command_id)
def test_every_other_command_of_the_readme_parses(words, monkeypatch):
    if words[0] == "python":
        assert words[1] == "benchmarks/compare.py", f"add {words[1]} to this test"
        main, argv = load_benchmark("compare").main, filled_in(words[2:])
    else:
        main, argv = entry_point(words[0]), filled_in(words[1:])
    assert isinstance(dry_parse(main, argv, monkeypatch), argparse.Namespace)


def test_a_sweep_overriding_a_key_the_default_data_set_lacks_fails_here_as_in_hydra():
    """What the README's sweep over the teachers did with data.root (the defaults' digits have no root)."""
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'data\.root'"):
        compose_as_hydra(["experiment=glob(cifar100_teacher_*)", "data.root=../shared/data"], multirun=True)
