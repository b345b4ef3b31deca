"""Two-stage baselines (AB, FSP, FT) and the InitStage callback that runs their initialization stage.

Reference values are written from the methods' formulas with Python loops over floats, never by calling
the code under test; trainable heads (connectors, translator, paraphraser) are evaluated as given networks.
"""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers import avg_pool_2x, compose_config
from pckd_lightning.callbacks import InitStage
from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import ABTerm, CrossEntropyTerm, FactorTransferTerm, FSPTerm, InitStageTerm
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import PairInfo
from pckd_lightning.losses.terms.factor_transfer import Paraphraser, translator
from pckd_lightning.models import ModelOutput, create_model
from pckd_lightning.run.build import build_callbacks, build_terms

REL = 1e-4
NUM_CLASSES = 10

# -- plain helpers (nested lists of floats) --------------------------------------------------------------


def randn(*shape, seed=0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def flat(x) -> list[float]:
    return [x] if not isinstance(x, list) else [v for item in x for v in flat(item)]


def context(s_stages, t_stages, s_model=None, t_model=None) -> DistillContext:
    b = s_stages[-1].shape[0]
    logits = torch.zeros(b, NUM_CLASSES)
    return DistillContext(
        student=ModelOutput(stages=s_stages, pooled=None, logits=logits),
        teacher=ModelOutput(stages=t_stages, pooled=None, logits=logits),
        labels=torch.zeros(b, dtype=torch.long),
        student_model=s_model,
        teacher_model=t_model,
    )


# -- values -----------------------------------------------------------------------------------------------


def plain_ab_layer(source: list[float], target: list[float], m: float) -> float:
    total = 0.0
    for s, t in zip(source, target, strict=True):
        if t <= 0 and s > -m:
            total += (s + m) ** 2
        if t > 0 and s <= m:
            total += (s - m) ** 2
    return total


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_init_loss_matches_plain_computation_and_main_loss_is_zero(margin):
    s1, s2 = randn(3, 3, 4, 4, seed=1), randn(3, 2, 2, 2, seed=2)
    t1, t2 = randn(3, 3, 4, 4, seed=3), randn(3, 5, 2, 2, seed=4)
    term = ABTerm(margin=margin)
    conv = nn.Sequential(nn.Conv2d(2, 5, 1), nn.BatchNorm2d(5)).eval()
    term.connectors = nn.ModuleList([nn.Identity(), conv])
    ctx = context([None, s1, s2], [None, t1, t2])
    got = term.init_loss(ctx)
    with torch.no_grad():
        mapped2 = conv(s2).tolist()  # the connector is a given network; the loss is the formula
    expected = 0.0
    for i in range(3):
        layer1 = plain_ab_layer(flat(s1[i].tolist()), flat(t1[i].tolist()), margin)
        layer2 = plain_ab_layer(flat(mapped2[i]), flat(t2[i].tolist()), margin)
        expected += (0.5 * layer1 + 1.0 * layer2) * 3 / 1000 / 3  # w = 2^(i-n+1); 3/1000; mean over batch
    assert got.item() == pytest.approx(expected, rel=REL)
    main = term(ctx)
    assert main.ndim == 0 and main.item() == 0.0 and not main.requires_grad
    assert not ABTerm.per_sample


def plain_fsp(a: list, b: list) -> list[list[float]]:
    """G[j][i] = mean over positions of b[j] · a[i] (a, b: [C][H][W] of the same side)."""
    h, w = len(a[0]), len(a[0][0])
    return [[sum(bj[y][x] * ai[y][x] for y in range(h) for x in range(w)) / (h * w) for ai in a] for bj in b]


def test_fsp_init_loss_matches_plain_computation():
    s = [randn(2, 3, 4, 4, seed=5), randn(2, 4, 4, 4, seed=6), randn(2, 2, 2, 2, seed=7)]
    t = [randn(2, 3, 4, 4, seed=8), randn(2, 4, 4, 4, seed=9), randn(2, 2, 2, 2, seed=10)]
    term = FSPTerm()
    expected = 0.0
    for k in range(2):  # consecutive pairs (0, 1) and (1, 2); in the second the 4x4 map is pooled to 2x2
        diffs = []
        for n in range(2):

            def maps(f, n=n, k=k):
                a, b = f[k][n].tolist(), f[k + 1][n].tolist()
                return (avg_pool_2x(a), b) if k == 1 else (a, b)

            g_s, g_t = plain_fsp(*maps(s)), plain_fsp(*maps(t))
            diffs += [(x - y) ** 2 for x, y in zip(flat(g_s), flat(g_t), strict=True)]
        expected += sum(diffs) / len(diffs)
    ctx = context(s, t)
    assert term.init_loss(ctx).item() == pytest.approx(expected, rel=REL)
    assert term(ctx).item() == 0.0 and not FSPTerm.per_sample


def plain_factor(f: list, p: int) -> list[float]:
    """normalize(mean over channels of f^p), flattened over positions ([C][H][W] -> [H·W])."""
    c, h, w = len(f), len(f[0]), len(f[0][0])
    v = [sum(f[k][y][x] ** p for k in range(c)) / c for y in range(h) for x in range(w)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


@pytest.mark.parametrize("distance", ["l1", "l2"])
def test_ft_main_and_init_losses_match_plain_computation(distance):
    torch.manual_seed(0)
    term = FactorTransferTerm(distance=distance)
    term.paraphraser = Paraphraser(6, 3).requires_grad_(False)
    term.translator = translator(4, 3).eval()
    s, t = randn(2, 4, 4, 4, seed=11), randn(2, 6, 2, 2, seed=12)
    ctx = context([None, s], [None, t])
    with torch.no_grad():  # the heads are given networks
        factor_s = term.translator(s).tolist()
        factor_t, reconstruction = term.paraphraser(t)
        factor_t, reconstruction = factor_t.tolist(), reconstruction.tolist()
    expected = []
    for n in range(2):
        phi_s, phi_t = plain_factor(avg_pool_2x(factor_s[n]), 2), plain_factor(factor_t[n], 2)
        d = [abs(a - b) if distance == "l1" else (a - b) ** 2 for a, b in zip(phi_s, phi_t, strict=True)]
        expected.append(sum(d) / len(d))
    assert term(ctx).tolist() == pytest.approx(expected, rel=REL)
    rec, target = flat(reconstruction), flat(t.tolist())
    mse = sum((a - b) ** 2 for a, b in zip(rec, target, strict=True)) / len(rec)
    assert term.init_loss(ctx).item() == pytest.approx(mse, rel=REL)


# -- pairs, shapes, gradients -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs():
    torch.manual_seed(0)
    names = [("resnet32x4", "resnet8x4"), ("vgg13", "MobileNetV2")]
    return {
        f"{t}->{s}": PairInfo(create_model(s, NUM_CLASSES), create_model(t, NUM_CLASSES), NUM_CLASSES)
        for t, s in names
    }


def make_module(pair: PairInfo, terms: dict[str, nn.Module]) -> DistillationModule:
    return DistillationModule(
        student=pair.student,
        teacher=pair.teacher,
        terms={"ce": CrossEntropyTerm(), **terms},
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
        num_classes=NUM_CLASSES,
        teacher_options=TeacherOptions(measure=False),
    )


def grads_of(params) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]


EXPECTED = {  # pair: (connector output shapes, translator output [k, H, W], FSP allowed, not feature layers)
    "resnet32x4->resnet8x4": ([None, None, None], (128, 8, 8), True, ("fc.",)),
    # MobileNetV2's last 1x1 conv sits after the last stage (the reference's get_feat_modules leaves it out)
    "vgg13->MobileNetV2": (
        [(128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)],
        (256, 2, 2),
        False,
        ("classifier.", "conv2."),
    ),
}


@pytest.mark.parametrize("pair_name", sorted(EXPECTED))
def test_shapes_and_gradients_on_published_pairs(pairs, pair_name):
    pair = pairs[pair_name]
    connector_shapes, factor_shape, fsp_ok, heads = EXPECTED[pair_name]
    student, teacher = pair.student, pair.teacher
    features = [p for n, p in student.named_parameters() if not n.startswith(heads)]
    others = [p for n, p in student.named_parameters() if n.startswith(heads)]
    terms = {"ab": ABTerm(), "ft": FactorTransferTerm()}
    if fsp_ok:
        terms["fsp"] = FSPTerm()
    else:
        with pytest.raises(ConfigError, match=r"same channel count.*\[16, 12, 16, 48, 160\].*\[64, 128"):
            FSPTerm().build(pair)
    module = make_module(pair, terms)
    ab, ft = module.terms["ab"], module.terms["ft"]
    batch = (randn(4, 3, 32, 32, seed=13), torch.arange(4), torch.arange(4))
    ctx = module.step.context(batch)  # one forward pass shared by every check below

    def zero_grads():
        for p in module.parameters():
            p.grad = None

    # AB: connectors (identity where channels and side match), frozen outside the init stage
    for connector, shape, f_s in zip(ab.connectors, connector_shapes, ctx.student.stages[1:], strict=True):
        if shape is None:
            assert isinstance(connector, nn.Identity)
        else:
            assert connector(f_s).shape == (4, *shape)
    trainable = {id(p) for p in module.trainable_parameters()}
    assert not any(p.requires_grad or id(p) in trainable for p in ab.connectors.parameters())
    assert {id(p) for p in ab.init_parameters(module.student)} == {
        id(p) for p in [*features, *ab.connectors.parameters()]
    }
    assert ab(ctx).item() == 0.0
    # FT: translator trained with the student, paraphraser frozen except in the init stage
    assert ft.translator(ctx.student.stages[-1]).shape == (4, *factor_shape)
    assert all(id(p) in trainable for p in ft.translator.parameters())
    assert not any(p.requires_grad or id(p) in trainable for p in ft.paraphraser.parameters())
    value = ft(ctx)
    assert value.shape == (4,) and torch.isfinite(value).all()
    value.mean().backward(retain_graph=True)
    assert all(grads_of(ft.translator.parameters())) and all(grads_of(features))
    assert all(p.grad is None for p in [*ft.paraphraser.parameters(), *teacher.parameters()])

    for term in module.terms.values():  # what InitStage does for the init stage
        for p in getattr(term, "init_parameters", lambda s: [])(module.student):
            p.requires_grad_(True)
    zero_grads()
    loss = ab.init_loss(ctx)
    assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
    loss.backward(retain_graph=True)
    assert all(grads_of(features)) and not any(grads_of(others))
    assert all(grads_of(ab.connectors.parameters()))
    assert all(p.grad is None for p in [*teacher.parameters(), *ft.parameters()])
    zero_grads()
    ft.init_loss(ctx).backward(retain_graph=True)
    assert all(grads_of(ft.paraphraser.parameters()))
    assert all(
        p.grad is None for p in [*student.parameters(), *ft.translator.parameters(), *teacher.parameters()]
    )
    if fsp_ok:
        zero_grads()
        fsp = module.terms["fsp"]
        loss = fsp.init_loss(ctx)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss > 0
        loss.backward()
        assert all(grads_of(features)) and not any(grads_of(others))
        assert all(p.grad is None for p in teacher.parameters())
        assert {id(p) for p in fsp.init_parameters(module.student)} == {id(p) for p in features}
        assert fsp(ctx).item() == 0.0
    zero_grads()


# -- the InitStage callback through a real Trainer ----------------------------------------------------------


class TinyData(L.LightningDataModule):
    """8 random 16x16 images as (x, y, idx), batches of 4."""

    def __init__(self) -> None:
        super().__init__()
        self.data = TensorDataset(
            randn(8, 3, 16, 16, seed=14), torch.arange(8) % NUM_CLASSES, torch.arange(8)
        )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=4)


def tiny_module(method: str) -> DistillationModule:
    torch.manual_seed(0)
    # AB gets real connectors from resnet8x4's wider maps; FSP needs resnet8's channel counts
    teacher = {"ab": "resnet8x4", "fsp": "resnet20", "ft": "resnet20"}[method]
    term = {"ab": ABTerm, "fsp": FSPTerm, "ft": FactorTransferTerm}[method](input_size=16)
    return make_module(
        PairInfo(create_model("resnet8", NUM_CLASSES), create_model(teacher, NUM_CLASSES), NUM_CLASSES),
        {method: term},
    )


def trainer(tmp_path, callbacks, max_epochs=1) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )


class Snapshot(L.Callback):
    """The module's state right after the callbacks before it ran their on_train_start (the init stage)."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        self.flags = {n: p.requires_grad for n, p in pl_module.named_parameters()}
        self.modes = {n: m.training for n, m in pl_module.named_modules()}


# parameters the init stage must change (all of them) and must keep (all of them), by state-dict prefix
INIT_CHANGES = {
    "ab": ({"student.", "terms.ab.connectors."}, {"student.fc.", "teacher."}),
    "fsp": ({"student."}, {"student.fc.", "teacher."}),
    "ft": ({"terms.ft.paraphraser."}, {"student.", "teacher.", "terms.ft.translator."}),
}


@pytest.mark.parametrize("method", sorted(INIT_CHANGES))
def test_init_stage_trains_exactly_what_the_method_says(tmp_path, method):
    module = tiny_module(method)
    term = module.terms[method]
    before = {k: v.detach().clone() for k, v in module.state_dict().items()}
    flags_before = {n: p.requires_grad for n, p in module.named_parameters()}
    stage, snap = InitStage(init_epochs=1), Snapshot()
    trainer(tmp_path, [stage, snap]).fit(module, datamodule=TinyData())

    assert len(stage.history) == 1 and math.isfinite(stage.history[0])
    assert bool(term.initialized)
    params = dict(module.named_parameters())
    must_change, must_keep = INIT_CHANGES[method]
    after_init = snap.state
    moved = {k for k in params if not torch.equal(before[k], after_init[k])}
    expected = {
        k
        for k in params
        if any(k.startswith(p) for p in must_change) and not any(k.startswith(p) for p in must_keep)
    }
    assert moved == expected
    assert snap.flags == flags_before  # requires_grad restored (frozen heads frozen again)
    assert not any(snap.modes[n] for n in snap.modes if n.startswith("teacher"))
    bn_stats = [k for k in before if k.startswith("student.") and k.endswith("running_mean")]
    stats_moved = any(not torch.equal(before[k], after_init[k]) for k in bn_stats)
    assert stats_moved == (method != "ft")  # FT's init stage keeps the student in eval mode
    # main training: frozen heads stay as the init stage left them; the teacher never moves
    final = module.state_dict()
    frozen = "terms.ab.connectors." if method == "ab" else "terms.ft.paraphraser." if method == "ft" else None
    for k, v in final.items():
        if k.startswith("teacher.") or (frozen and k.startswith(frozen)):
            assert torch.equal(v, after_init[k]), k
    if method == "ft":
        assert any(
            not torch.equal(final[k], after_init[k]) for k in params if k.startswith("terms.ft.translator.")
        )


def test_init_stage_runs_once_and_not_on_resume(tmp_path):
    module = tiny_module("ft")
    stage = InitStage(init_epochs=1)
    first = trainer(tmp_path, [stage])
    first.fit(module, datamodule=TinyData())
    assert len(stage.history) == 1
    path = tmp_path / "last.ckpt"
    first.save_checkpoint(path)
    paraphraser = {k: v.clone() for k, v in module.terms["ft"].paraphraser.state_dict().items()}

    resumed, stage2 = tiny_module("ft"), InitStage(init_epochs=1)
    trainer(tmp_path, [stage2], max_epochs=2).fit(resumed, datamodule=TinyData(), ckpt_path=path)
    assert stage2.history == []  # the trained paraphraser came from the checkpoint
    assert bool(resumed.terms["ft"].initialized)
    for k, v in resumed.terms["ft"].paraphraser.state_dict().items():
        assert torch.equal(v, paraphraser[k]), k


def test_main_training_refuses_to_start_without_the_init_stage(tmp_path):
    with pytest.raises(ConfigError, match=r"InitStage.*init_epochs: 0"):
        trainer(tmp_path, []).fit(tiny_module("ab"), datamodule=TinyData())
    module = tiny_module("fsp")
    before = {k: v.clone() for k, v in module.student.state_dict().items()}
    with pytest.warns(UserWarning, match="skipped on purpose"):
        stage = InitStage(init_epochs=0)
        trainer(tmp_path, [stage], max_epochs=1).fit(module, datamodule=TinyData())
    assert stage.history == [] and bool(module.terms["fsp"].initialized)
    assert any(not torch.equal(v, before[k]) for k, v in module.student.state_dict().items())  # main ran


def test_init_stage_reads_the_run_optimizer_unless_set(tmp_path):
    captured = {}

    class Spy(InitStage):
        def _hyperparameters(self, trainer):
            captured.update(super()._hyperparameters(trainer))
            return captured

    trainer(tmp_path, [Spy(init_epochs=1, momentum=0.5)]).fit(tiny_module("fsp"), datamodule=TinyData())
    assert captured == {"lr": 0.05, "momentum": 0.5, "weight_decay": 5e-4}
    assert issubclass(ABTerm, InitStageTerm) and issubclass(FSPTerm, InitStageTerm)


# -- options and configs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: FactorTransferTerm(distance="l3"), r"distance must be one of \['l1', 'l2'\]"),
        (lambda: FactorTransferTerm(p=0), r"p must be an int >= 1"),
        (lambda: FactorTransferTerm(rate=0), r"rate must be a number > 0"),
        (lambda: FactorTransferTerm(weight=-1), r"weight must be a finite number >= 0"),
        (lambda: ABTerm(margin=0), r"margin must be a number > 0"),
        (lambda: ABTerm(input_size=0), r"input_size must be a positive int"),
        (lambda: FSPTerm(input_size="32"), r"input_size must be a positive int"),
        (lambda: InitStage(init_epochs=-1), r"init_epochs must be an int >= 0"),
        (lambda: InitStage(init_epochs=2.5), r"init_epochs must be an int >= 0"),
        (lambda: InitStage(lr=0), r"lr must be null .* or a number > 0"),
        (lambda: InitStage(momentum=1.0), r"momentum must be null .* or a number >= 0.0 and < 1.0"),
        (lambda: InitStage(weight_decay=-1e-4), r"weight_decay must be null .* or a number >= 0"),
    ],
)
def test_bad_options_name_the_option_and_the_valid_values(build, match):
    with pytest.raises(ConfigError, match=match):
        build()


def test_ft_rate_too_small_for_the_teacher_says_the_minimum():
    pair = PairInfo(create_model("resnet8", NUM_CLASSES), create_model("resnet20", NUM_CLASSES), NUM_CLASSES)
    with pytest.raises(ConfigError, match=r"rate >= 0.0156"):
        FactorTransferTerm(rate=0.01, input_size=16).build(pair)


PUBLISHED = {  # method: (term, its options, init-stage lr in the config)
    "ft": ("ft", {"weight": 200.0, "rate": 0.5, "p": 2, "distance": "l1"}, 0.01),
    "ab": ("ab", {"margin": 1.0}, None),
    "fsp": ("fsp", {}, None),
}


@pytest.mark.parametrize("method", sorted(PUBLISHED))
def test_configs_compose_with_published_settings_and_build(method, tmp_path):
    overrides = [f"distill={method}", "model=cifar100_resnet32x4_resnet8x4", "data=cifar100"]
    cfg = compose_config(overrides, output_dir=tmp_path)
    name, options, lr = PUBLISHED[method]
    assert cfg.distill.name == method and cfg.distill.views == 1 and cfg.distill.preview is None
    assert set(cfg.distill.terms) == {"ce", name} and cfg.distill.terms.ce.weight == 1.0
    for key, value in options.items():
        assert cfg.distill.terms[name][key] == value, key
    init = cfg.distill.callbacks.init_stage
    assert init.init_epochs == 30 and init.lr == lr and init.momentum is None and init.weight_decay is None
    terms = build_terms(cfg.distill)
    assert isinstance(terms[name], InitStageTerm) and terms[name].input_size == 32
    stages = [c for c in build_callbacks(cfg) if isinstance(c, InitStage)]
    assert len(stages) == 1 and stages[0].init_epochs == 30
    torch.manual_seed(0)
    pair = PairInfo(create_model("resnet8", 100), create_model("resnet20", 100), 100)  # cheap, FSP-compatible
    terms[name].build(pair)
    assert not terms[name].initialized
    with open_dict(cfg):
        cfg.distill.terms[name].weight = 1.0
    if method != "ft":  # AB and FSP add nothing to the main loss, so a weight is refused
        with pytest.raises(ConfigError, match=r"unknown option\(s\) \['weight'\].*valid options"):
            build_terms(cfg.distill)


def test_a_wrong_teacher_fails_before_the_init_stage(tmp_path):
    from pckd_lightning.errors import CheckpointError

    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", NUM_CLASSES),
        teacher=create_model("resnet20", NUM_CLASSES),
        terms={"ce": CrossEntropyTerm(), "fsp": FSPTerm(input_size=16)},
        optimizer=partial(torch.optim.SGD, lr=0.05),
        num_classes=NUM_CLASSES,
        teacher_options=TeacherOptions(min_accuracy=99.0),  # an untrained teacher is far below
    )
    stage = InitStage(init_epochs=1)
    with pytest.raises(CheckpointError, match="min_accuracy"):
        trainer(tmp_path, [stage]).fit(module, datamodule=TinyData())
    assert stage.history == [] and not module.terms["fsp"].initialized
