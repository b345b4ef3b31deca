"""Every config composes, every published pair builds, and a missing teacher fails with a clear message."""

from __future__ import annotations

import shutil

import pytest
from omegaconf import OmegaConf

from helpers import CONF_DIR, compose_config
from pckd_lightning.errors import CheckpointError
from pckd_lightning.models import list_models
from pckd_lightning.run.build import build_terms, instantiate

DISTILLS = sorted(p.stem for p in (CONF_DIR / "distill").glob("*.yaml"))
PAIRS = sorted(
    p.stem.removeprefix("cifar100_")
    for p in (CONF_DIR / "model").glob("cifar100_*.yaml")
    if p.stem not in {"cifar100_scratch", "cifar100_pair"}
)
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
PUBLISHED_PAIRS = {
    "wrn_40_2_wrn_16_2",
    "wrn_40_2_wrn_40_1",
    "resnet56_resnet20",
    "resnet110_resnet20",
    "resnet110_resnet32",
    "resnet32x4_resnet8x4",
    "vgg13_vgg8",
    "resnet32x4_ShuffleV1",
    "resnet32x4_ShuffleV2",
    "wrn_40_2_ShuffleV1",
    "vgg13_MobileNetV2",
    "ResNet50_MobileNetV2",
    "ResNet50_vgg8",
}


def test_every_published_pair_has_a_model_config_and_a_pckd_experiment():
    assert set(PAIRS) == PUBLISHED_PAIRS
    assert {
        e.removeprefix("cifar100_pckd_") for e in EXPERIMENTS if e.startswith("cifar100_pckd_")
    } == PUBLISHED_PAIRS


def test_the_default_config_is_the_digits_pckd_demo():
    cfg = compose_config([])
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.distill.name == "pckd" and cfg.data.views == 4


@pytest.mark.parametrize("distill", DISTILLS)
def test_every_distill_composes_with_every_pair(distill):
    """With one pair; with every pair where the method's settings depend on it (``pckd.by_pair`` tables),
    the one way a pair reaches a method's config."""
    for pair in PAIRS:
        cfg = compose_config([f"model=cifar100_{pair}", f"distill={distill}", "data=cifar100"])
        assert cfg.data.views == cfg.distill.views
        assert cfg.trainer.max_epochs == 240 and list(cfg.scheduler.milestones) == [150, 180, 210]
        assert build_terms(cfg.distill)
        if "by_pair" not in OmegaConf.to_yaml(cfg.distill):
            break  # the same config whatever the pair


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.model.student.name in list_models()
    if cfg.model.teacher is not None:
        assert cfg.model.teacher.name in list_models()


@pytest.mark.parametrize("pair", sorted(PUBLISHED_PAIRS))
def test_published_students_build_and_use_the_published_lr(pair):
    cfg = compose_config([f"experiment=cifar100_pckd_{pair}"])
    student = instantiate(cfg.model.student, num_classes=100)
    assert student.classifier_layer.out_features == 100
    small_lr_students = {"MobileNetV2", "ShuffleV1", "ShuffleV2"}
    assert cfg.optimizer.lr == (0.01 if cfg.model.student.name in small_lr_students else 0.05)


def test_pckd_published_defaults():
    terms = compose_config(["distill=pckd"]).distill.terms
    assert terms.ce.weight == 1.0 and terms.kd.weight == 1.0 and terms.kd.temperature == 4.0
    assert terms.category_contrast.weight == 0.05 and terms.category_contrast.temperature == 4.0
    assert terms.category_contrast.base_temperature == 0.07
    assert terms.center_align.weight == 1.0 and terms.feature_align.weight == 20.0
    assert terms.feature_align.hidden_factor == 16
    assert terms.kd.preview and terms.category_contrast.preview
    assert compose_config(["distill=pckd_wo_kd"]).distill.terms.kd.weight == 0.0


def test_missing_teacher_checkpoint_says_how_to_get_one(tmp_path):
    cfg = compose_config(
        ["experiment=cifar100_pckd_resnet56_resnet20", f"model.teacher.checkpoint={tmp_path}/x.pth"]
    )
    with pytest.raises(CheckpointError, match=r"experiment=cifar100_teacher_<arch>"):
        instantiate(cfg.model.teacher, num_classes=100)


@pytest.mark.parametrize(
    ("pair", "beta"),
    [("resnet56_resnet20", 2), ("vgg13_vgg8", 6), ("wrn_40_2_wrn_16_2", 6), ("resnet32x4_resnet8x4", 8)],
)
def test_dkd_uses_the_published_per_pair_beta(pair, beta):
    cfg = compose_config([f"experiment=cifar100_pckd_{pair}", "distill=dkd"])
    assert cfg.distill.terms.dkd.beta == beta
    assert build_terms(cfg.distill)["dkd"].beta == beta


@pytest.mark.parametrize("method", ["dkd", "kd", "crd"])
def test_the_preview_switch_weights_any_per_sample_method(method, tmp_path):
    from pckd_lightning.preview import PreviewWeights
    from pckd_lightning.run.build import instantiate

    cfg = compose_config([f"distill={method}", "+preview=all"], output_dir=tmp_path)
    terms = build_terms(cfg.distill)
    marked = {name for name, term in terms.items() if term.preview}
    assert marked == {name for name, term in terms.items() if term.per_sample and name != "ce"}
    assert marked  # dkd, kd and crd are all per image
    preview = instantiate(cfg.distill.preview)  # the published schedule, from conf/preview/
    assert isinstance(preview, PreviewWeights) and (preview.base, preview.schedule) == (1.005, "epoch")
    plain = compose_config([f"distill={method}"], output_dir=tmp_path)
    assert plain.distill.get("preview") is None
    assert not any(term.preview for term in build_terms(plain.distill).values())


@pytest.mark.parametrize("pair", sorted(PUBLISHED_PAIRS))
def test_every_route_to_a_pair_trains_with_its_published_lr(pair):
    """The recipe's table holds the lr by pair (0.01 for MobileNet/ShuffleNet students), so model=... gets it too."""
    small = pair.endswith(("MobileNetV2", "ShuffleV1", "ShuffleV2"))
    for overrides in (
        [f"model=cifar100_{pair}", "distill=kd", "data=cifar100"],
        [f"experiment=cifar100_pckd_{pair}"],
    ):
        assert compose_config(overrides).optimizer.lr == (0.01 if small else 0.05), overrides


def test_the_module_is_built_from_its_config_group_with_typed_option_groups(tmp_path):
    from pckd_lightning.data import DigitsDataModule
    from pckd_lightning.distillation import DistillationModule, Performance, TeacherOptions
    from pckd_lightning.preview import PreviewWeights
    from pckd_lightning.run.build import build_module

    overrides = [
        "model=digits_scratch_resnet8",
        "distill=ce",
        "+preview=all",  # ce is not preview-weighted: the weights are built, no term is marked
        "module.performance.channels_last=true",
        "module.performance.compile_mode=max-autotune",
        "module.teacher_options.min_accuracy=50",
        "module.lr_scaling=linear",
        "preview@distill.preview=progress",
    ]
    cfg = compose_config(overrides, output_dir=tmp_path)
    assert cfg.module._target_ == "pckd_lightning.distillation.DistillationModule"
    module = build_module(cfg, DigitsDataModule(image_size=16))
    assert isinstance(module, DistillationModule)
    assert module.performance == Performance(channels_last=True, compile_mode="max-autotune")
    assert module.teacher_options == TeacherOptions(min_accuracy=50)
    assert module.lr_scaling == "linear" and module.num_classes == 10
    assert isinstance(module.step.preview, PreviewWeights) and module.step.preview.schedule == "progress"
    assert (
        module.step.performance is module.performance
        and module.step.teacher_options is module.teacher_options
    )
    assert not module.step.preview_terms
    bad = compose_config([*overrides[:2], "module.performance.compile_mode=fast"], output_dir=tmp_path)
    with pytest.raises(Exception, match=r"compile_mode='fast'"):
        build_module(bad, DigitsDataModule(image_size=16))


@pytest.mark.parametrize(
    ("epochs", "milestones"),
    [(240, [150, 180, 210]), (120, [75, 90, 105]), (60, [38, 45, 53]), (20, [13, 15, 18]), (8, [5, 6, 7])],
)
def test_the_scaled_step_schedule_keeps_the_published_shape_at_any_length(epochs, milestones):
    """x0.1 after 62.5, 75 and 87.5 % of the epochs: each milestone the first epoch at or past its fraction."""
    import math

    import torch

    cfg = compose_config(["data=cifar100", "scheduler=multistep_scaled", f"trainer.max_epochs={epochs}"])
    assert list(cfg.scheduler.milestones) == milestones
    assert milestones == [math.ceil(f * epochs) for f in (0.625, 0.75, 0.875)]  # the rule, independently
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = instantiate(cfg.scheduler)(optimizer)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # full lr for the first 62.5 % of the run, then 0.1x at each milestone
    expected = [0.05 * 0.1 ** sum(e >= m for m in milestones) for e in range(epochs)]
    assert lrs == pytest.approx(expected)


def test_the_scaled_schedule_refuses_a_length_it_cannot_scale():
    from pckd_lightning.resolvers import scaled_milestones

    with pytest.raises(ValueError, match="max_epochs >= 1"):
        scaled_milestones(0, [0.5])
    with pytest.raises(ValueError, match=r"fractions in \(0, 1\)"):
        scaled_milestones(10, [1.5])


def test_per_pair_settings_live_with_their_method_and_follow_the_pair_by_any_route(tmp_path):
    """One home each (issue 25): the pair configs hold the networks only; DKD's β, LS's temperature and the lr
    are tables in dkd.yaml, kd_ls.yaml and recipe/cifar100.yaml, keyed by <teacher>_<student>, and the run's
    resolved config records the chosen value only."""
    import yaml
    from omegaconf import OmegaConf

    for path in (CONF_DIR / "model").glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())) <= {"student", "teacher", "train_teacher_if_missing"}, (
            path
        )
    generic = ["model=cifar100_pair", "model.teacher.name=vgg13", "model.student.name=MobileNetV2"]
    cfg = compose_config([*generic, "data=cifar100", "distill=dkd"], output_dir=tmp_path)
    assert (cfg.distill.terms.dkd.beta, cfg.optimizer.lr) == (6, 0.01)
    assert "by_pair" not in OmegaConf.to_yaml(cfg, resolve=True)
    scratch = compose_config(
        ["model=cifar100_scratch", "data=cifar100", "distill=kd_ls"], output_dir=tmp_path
    )
    assert (scratch.distill.terms.kd.temperature, scratch.distill.terms.kd.weight, scratch.optimizer.lr) == (
        2.0,
        9.0,
        0.05,
    )


def test_a_data_set_without_a_recipe_gets_none(tmp_path):
    """recipe follows the data set where conf/recipe/<data>.yaml exists; otherwise the run keeps the
    trainer's and the optimizer's own values."""
    from hydra import compose, initialize_config_dir

    from pckd_lightning.schema.config import validate

    conf = tmp_path / "conf"
    shutil.copytree(CONF_DIR, conf)
    shutil.copy(conf / "data" / "digits.yaml", conf / "data" / "my_digits.yaml")
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("train", overrides=["data=my_digits", f"paths.output_dir={tmp_path}"])
        digits = compose("train", overrides=["data=digits"])
    assert (cfg.trainer.max_epochs, cfg.optimizer.lr, list(cfg.lr_milestones)) == (240, 0.05, [])
    assert list(cfg.scheduler.milestones) == []  # no decay: train.yaml's lr_milestones, the one home
    validate(cfg)
    assert (digits.trainer.max_epochs, list(digits.lr_milestones)) == (10, [6, 8])


DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("data", DATA)
def test_every_data_config_extends_the_base_and_declares_what_it_must(data):
    """conf/data/base.yaml holds the keys every data set shares; a data set sets its ``_target_`` and
    ``image_size`` (its ??? keys), which the methods with adapters read (``${data.image_size}``)."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(CONF_DIR / "data" / "base.yaml")
    cfg = compose_config([f"data={data}", "distill=fitnet"])
    assert set(base) - {"defaults"} <= set(cfg.data)
    assert not OmegaConf.missing_keys(cfg.data)
    assert cfg.distill.terms.fitnet.input_size == cfg.data.image_size
