"""The 2022–2024 logit methods: LS (standardized KD/DKD), DIST and CTKD.

Reference values are computed from the published formulas with Python loops in float64, never by calling
the code under test; the configs are checked against the settings cited in them, and each method runs
through the app (fp32/bf16, eager/compiled, one process and ddp_cpu).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, compose_config, free_port, run_ranks, save_teacher, two_step_run
from pckd_lightning.distillation.dot import DistillationOrientedSGD, DOTGradientSplit
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import (
    CurriculumTemperature,
    DISTTerm,
    DKDTerm,
    KDTerm,
    MLKDBatchTerm,
    MLKDClassTerm,
    MLKDInstanceTerm,
)
from pckd_lightning.losses import (
    functional as LF,
)
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.models import ModelOutput, create_model
from pckd_lightning.run.build import build_terms

REL = 1e-5
METHODS = ["kd_ls", "dkd_ls", "dist", "ctkd", "mlkd", "mlkd_ls", "kd_dot", "dkd_dot"]

# -- plain float64 helpers (lists of floats) -------------------------------------------------------------


def mean(v: list[float]) -> float:
    return sum(v) / len(v)


def zscore(row: list[float]) -> list[float]:
    m = mean(row)
    std = math.sqrt(sum((v - m) ** 2 for v in row) / (len(row) - 1))  # unbiased, as the LS code
    return [(v - m) / (std + 1e-7) for v in row]


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    top = max(row)
    e = [math.exp((v - top) / t) for v in row]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def plain_kd(zs: list[float], zt: list[float], t: float) -> float:
    return t * t * kl(softmax(zt, t), softmax(zs, t))


def plain_dkd(zs: list[float], zt: list[float], c: int, alpha: float, beta: float, t: float) -> float:
    ps, pt = softmax(zs, t), softmax(zt, t)
    tckd = kl([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]])
    qs = softmax([v for j, v in enumerate(zs) if j != c], t)
    qt = softmax([v for j, v in enumerate(zt) if j != c], t)
    return t * t * (alpha * tckd + beta * kl(qt, qs))


def plain_pearson(a: list[float], b: list[float]) -> float:
    ma, mb = mean(a), mean(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    den = math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b))
    return num / (den + 1e-8)


def plain_dist(zs: list[list[float]], zt: list[list[float]], beta: float, gamma: float, t: float) -> float:
    ps, pt = [softmax(r, t) for r in zs], [softmax(r, t) for r in zt]
    inter = 1 - mean([plain_pearson(a, b) for a, b in zip(ps, pt, strict=True)])
    columns = range(len(ps[0]))
    intra = 1 - mean([plain_pearson([r[c] for r in ps], [r[c] for r in pt]) for c in columns])
    return t * t * (beta * inter + gamma * intra)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def logit_context(zs: torch.Tensor, zt: torch.Tensor, labels: torch.Tensor | None = None) -> DistillContext:
    labels = torch.zeros(len(zs), dtype=torch.long) if labels is None else labels
    out = lambda z: ModelOutput(stages=[], pooled=z[:, :1], logits=z)  # noqa: E731
    return DistillContext(out(zs), out(zt), labels, student_model=None, teacher_model=None)


# -- LS: logit standardization -----------------------------------------------------------------------------


def test_standardize_is_the_unbiased_z_score_of_each_row():
    z = 5 * randn(4, 7, seed=1) + 3
    expected = [zscore(row) for row in z.tolist()]
    got = LF.standardize(z).tolist()
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e, rel=REL, abs=1e-6)


@pytest.mark.parametrize("t", [2.0, 3.0])
def test_kd_with_standardize_matches_the_plain_ls_formula(t):
    zs, zt = 3 * randn(5, 6, seed=2), 8 * randn(5, 6, seed=3) + 1
    expected = [plain_kd(zscore(s), zscore(r), t) for s, r in zip(zs.tolist(), zt.tolist(), strict=True)]
    got = KDTerm(temperature=t, standardize=True)(logit_context(zs, zt))
    assert got.shape == (5,)
    assert got.tolist() == pytest.approx(expected, rel=REL)
    # and without the switch it is the plain KD (a different value on these logits)
    plain = [plain_kd(s, r, t) for s, r in zip(zs.tolist(), zt.tolist(), strict=True)]
    assert KDTerm(temperature=t)(logit_context(zs, zt)).tolist() == pytest.approx(plain, rel=REL)
    assert plain != pytest.approx(expected, rel=1e-2)


def test_standardized_kd_ignores_the_scale_and_shift_of_either_model():
    zs, zt = randn(3, 5, seed=4), randn(3, 5, seed=5)
    base = LF.kd(zs, zt, 2.0, standardize=True)
    moved = LF.kd(7 * zs - 2, 0.3 * zt + 5, 2.0, standardize=True)
    assert moved.tolist() == pytest.approx(base.tolist(), rel=1e-4)
    # plain KD does depend on the scale
    assert LF.kd(7 * zs, zt, 2.0).tolist() != pytest.approx(LF.kd(zs, zt, 2.0).tolist(), rel=1e-2)


def test_dkd_with_standardize_matches_the_plain_formula():
    zs, zt = 3 * randn(6, 7, seed=6), 6 * randn(6, 7, seed=7)
    labels = torch.tensor([0, 3, 6, 2, 2, 5])
    term = DKDTerm(alpha=1.0, beta=8.0, temperature=2.0, warmup_epochs=0, standardize=True)
    expected = [
        plain_dkd(zscore(s), zscore(r), c, 1.0, 8.0, 2.0)
        for s, r, c in zip(zs.tolist(), zt.tolist(), labels.tolist(), strict=True)
    ]
    assert term(logit_context(zs, zt, labels)).tolist() == pytest.approx(expected, rel=REL)


# -- DIST --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("beta", "gamma", "t"), [(1.0, 1.0, 4.0), (2.0, 0.5, 1.0)])
def test_dist_matches_the_plain_pearson_relations(beta, gamma, t):
    zs, zt = 3 * randn(6, 5, seed=8), 3 * randn(6, 5, seed=9)
    expected = plain_dist(zs.tolist(), zt.tolist(), beta, gamma, t)
    got = DISTTerm(beta=beta, gamma=gamma, temperature=t)(logit_context(zs, zt))
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=REL)


def test_dist_vanishes_for_identical_predictions_and_couples_the_batch():
    z = 3 * randn(4, 5, seed=10)
    assert LF.dist(z, z.clone()).item() == pytest.approx(0.0, abs=1e-4)  # float32 rounding, times T² = 16
    # the intra-class part: changing one teacher row changes the gradient reaching another student row
    zs = z.clone().requires_grad_()
    zt = 3 * randn(4, 5, seed=11)
    (g1,) = torch.autograd.grad(LF.dist(zs, zt, beta=0.0, gamma=1.0), zs)
    zt2 = zt.clone()
    zt2[3] = -zt2[3]
    (g2,) = torch.autograd.grad(LF.dist(zs, zt2, beta=0.0, gamma=1.0), zs)
    assert not torch.allclose(g1[0], g2[0])
    assert not DISTTerm.per_sample


def test_dist_under_bf16_autocast_is_the_float32_value():
    zs, zt = 3 * randn(8, 10, seed=12).float(), 3 * randn(8, 10, seed=13).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = LF.dist(zs, zt)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(LF.dist(zs, zt).item(), rel=1e-6)


# -- CTKD --------------------------------------------------------------------------------------------------


def ctkd_reference_lambda(epoch: int, loops: int = 10) -> float:
    """zhengli97/CTKD CosineDecay(max 0, min -1, loops).get_value(epoch), negated (its GRL multiplies by it)."""
    i = min(max(epoch, 0), loops)
    value = (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (0 - (-1)) + (-1)
    return -value


def test_ctkd_reversal_weight_follows_the_reference_cosine_curriculum():
    temp = CurriculumTemperature()
    assert temp.reversal.item() == 0.0  # before the first epoch
    for epoch in (1, 2, 5, 9, 10, 11, 240):
        temp.on_train_epoch_start(epoch)
        assert temp.reversal.item() == pytest.approx(ctkd_reference_lambda(epoch), abs=1e-7), epoch
    temp.on_train_epoch_start(5)
    assert temp.reversal.item() == pytest.approx(0.5, abs=1e-7)  # halfway: (1 − cos(π/2)) / 2


def test_ctkd_temperature_value_and_reversed_gradient():
    temp = CurriculumTemperature(min_temperature=1.0, temperature_range=20.0, init=1.0)
    term = KDTerm(learned_temperature=temp)
    term.on_train_epoch_start(3)
    lam = ctkd_reference_lambda(3)
    t0 = 1 + 20 / (1 + math.exp(-1.0))
    assert temp().item() == pytest.approx(t0, rel=1e-6)
    zs, zt = (3 * randn(4, 6, seed=14)).float().requires_grad_(), (3 * randn(4, 6, seed=15)).float()
    loss = term(logit_context(zs, zt)).mean()
    rows = list(zip(zs.tolist(), zt.tolist(), strict=True))
    assert loss.item() == pytest.approx(mean([plain_kd(s, r, t0) for s, r in rows]), rel=1e-5)
    loss.backward()

    # d loss / d θ by a central difference of the float64 formula through T(θ) = 1 + 20·sigmoid(θ)
    def plain_loss(theta: float) -> float:
        t = 1 + 20 / (1 + math.exp(-theta))
        return mean([plain_kd(s, r, t) for s, r in rows])

    h = 1e-5
    d_theta = (plain_loss(1 + h) - plain_loss(1 - h)) / (2 * h)
    assert temp.theta.grad.item() == pytest.approx(-lam * d_theta, rel=1e-3)
    # the student's gradient is that of KD at the current temperature: the reversal touches θ only
    zs2 = zs.detach().clone().requires_grad_()
    LF.kd(zs2, zt, t0).mean().backward()
    torch.testing.assert_close(zs.grad, zs2.grad, rtol=1e-5, atol=1e-7)


def test_ctkd_on_dkd_passes_the_epoch_and_the_learned_temperature():
    temp = CurriculumTemperature()
    term = DKDTerm(learned_temperature=temp, warmup_epochs=0, beta=2.0)
    term.on_train_epoch_start(10)
    assert temp.reversal.item() == pytest.approx(1.0)
    zs, zt = 3 * randn(4, 5, seed=16), 3 * randn(4, 5, seed=17)
    labels = torch.tensor([0, 1, 4, 2])
    t = temp().item()
    expected = [
        plain_dkd(s, r, c, 1.0, 2.0, t)
        for s, r, c in zip(zs.tolist(), zt.tolist(), labels.tolist(), strict=True)
    ]
    value = term(logit_context(zs, zt, labels))
    assert value.tolist() == pytest.approx(expected, rel=1e-5)
    value.sum().backward()
    assert temp.theta.grad is not None and temp.theta.grad.item() != 0


@pytest.mark.slow
def test_a_compiled_ctkd_term_follows_its_curriculum_without_recompiling():
    zs, zt = 3 * randn(6, 7, seed=18).float(), 3 * randn(6, 7, seed=19).float()
    ctx = logit_context(zs, zt)
    eager = KDTerm(learned_temperature=CurriculumTemperature())
    compiled = KDTerm(learned_temperature=CurriculumTemperature())
    compiled.compile()
    for epoch in (1, 2, 7, 30):
        grads = []
        for term in (eager, compiled):
            term.on_train_epoch_start(epoch)
            term.zero_grad()
        with torch._dynamo.config.patch(error_on_recompile=epoch > 1):
            for term in (eager, compiled):
                term(ctx).sum().backward()
                grads.append(term.learned_temperature.theta.grad.item())
        assert grads[1] == pytest.approx(grads[0], rel=1e-4), epoch


# -- MLKD --------------------------------------------------------------------------------------------------


def plain_median(values: list[float]) -> float:
    """numpy.percentile(values, 50) (linear interpolation)."""
    v = sorted(values)
    pos = 0.5 * (len(v) - 1)
    low = math.floor(pos)
    return v[low] + (v[min(low + 1, len(v) - 1)] - v[low]) * (pos - low)


def plain_gram_gap(ps: list[list[float]], pt: list[list[float]], over_classes: bool) -> float:
    """‖G_t − G_s‖² / n with G = PᵀP (classes, n = C) or PPᵀ (batch, n = B)."""
    if over_classes:
        ps, pt = [list(c) for c in zip(*ps, strict=True)], [list(c) for c in zip(*pt, strict=True)]
    n = len(ps)
    gap = 0.0
    for i in range(n):
        for j in range(n):
            gs = sum(a * b for a, b in zip(ps[i], ps[j], strict=True))
            gt = sum(a * b for a, b in zip(pt[i], pt[j], strict=True))
            gap += (gt - gs) ** 2
    return gap / n


def plain_mlkd(sw, ss, tw, ts, temps, standardize=False):
    """The reference's instance / batch / class losses (unweighted) from lists of rows, in float64."""
    conf = [max(softmax(r)) for r in tw]
    sample_frac = mean([1.0 if c <= plain_median(conf) else 0.0 for c in conf])
    class_conf = [sum(col) for col in zip(*[softmax(r) for r in tw], strict=True)]
    class_frac = mean([1.0 if c <= plain_median(class_conf) else 0.0 for c in class_conf])
    prep = zscore if standardize else (lambda r: r)

    def kd_mean(s_rows, t_rows, t):
        return mean([plain_kd(prep(a), prep(b), t) for a, b in zip(s_rows, t_rows, strict=True)])

    weak = sum(kd_mean(sw, tw, t) * sample_frac for t in temps)
    strong = sum(kd_mean(ss, ts, t) if k < 3 else kd_mean(sw, tw, t) for k, t in enumerate(temps))
    probs = lambda rows, t: [softmax(r, t) for r in rows]  # noqa: E731
    batch = sum(plain_gram_gap(probs(sw, t), probs(tw, t), False) for t in temps) * sample_frac
    klass = sum(plain_gram_gap(probs(sw, t), probs(tw, t), True) for t in temps) * class_frac
    return weak + strong, batch, klass


def two_view_context(b: int = 6, c: int = 5, seed: int = 20) -> tuple[DistillContext, list]:
    zs, zt = 3 * randn(b * 2, c, seed=seed), 4 * randn(b * 2, c, seed=seed + 1)
    labels = torch.arange(b).repeat_interleave(2) % c
    ctx = logit_context(zs, zt, labels)
    ctx.num_views = 2
    rows = [zs[0::2].tolist(), zs[1::2].tolist(), zt[0::2].tolist(), zt[1::2].tolist()]  # image-major views
    return ctx, rows


@pytest.mark.parametrize("standardize", [False, True])
def test_mlkd_levels_match_the_plain_reference_computation(standardize):
    ctx, rows = two_view_context()
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    instance, batch, klass = plain_mlkd(*rows, temps, standardize=standardize)
    got = MLKDInstanceTerm(temps, standardize=standardize)(ctx)
    assert got.shape == (12,)  # per view-sample: the module averages it
    assert got.mean().item() == pytest.approx(instance, rel=1e-5)
    assert MLKDBatchTerm(temps)(ctx).item() == pytest.approx(batch, rel=1e-5)
    assert MLKDClassTerm(temps)(ctx).item() == pytest.approx(klass, rel=1e-5)


def test_mlkd_confidence_masks_take_the_median_of_the_teacher():
    # hand-made: top probabilities 0.9, 0.6, 0.5, 0.7 -> median 0.65 -> samples 2 and 3 kept
    p = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5], [0.3, 0.7]], dtype=torch.float64)
    samples, classes = LF.confidence_masks(p.log())
    confidence = [0.9, 0.6, 0.5, 0.7]
    assert plain_median(confidence) == pytest.approx(0.65)
    assert samples.tolist() == [0.0, 1.0, 1.0, 0.0]
    # class sums 2.3 and 1.7 -> median 2.0 -> only class 1
    assert classes.tolist() == [0.0, 1.0]


def test_mlkd_instance_rows_take_per_image_weights_on_both_views():
    ctx, _ = two_view_context()
    term = MLKDInstanceTerm()
    rows = term(ctx).view(6, 2)
    weights = torch.tensor([1.0, 0.5, 0.25, 1.0, 0.0, 2.0], dtype=torch.float64)
    weighted = (term(ctx) * weights.repeat_interleave(2)).mean()
    assert weighted.item() == pytest.approx((weights * rows.sum(dim=1)).mean().item() / 2, rel=1e-6)


def test_mlkd_without_its_two_views_says_how_to_get_them():
    z = randn(4, 5)
    for term in (MLKDInstanceTerm(), MLKDBatchTerm(), MLKDClassTerm()):
        with pytest.raises(ConfigError, match="distill=mlkd"):
            term(logit_context(z, z))
    with pytest.raises(ConfigError, match="temperatures"):
        MLKDBatchTerm(temperatures=[4.0, 0.0])
    with pytest.raises(ConfigError, match="temperatures"):
        MLKDClassTerm(temperatures=[])


def test_weak_strong_views_are_the_standard_view_and_a_randaugmented_one():
    from PIL import Image

    from pckd_lightning.data.transforms import WeakStrongViews, train_transform

    image = Image.fromarray((torch.rand(16, 16, 3) * 255).to(torch.uint8).numpy())
    views = WeakStrongViews(image_size=16)
    torch.manual_seed(3)
    out = views(image)
    torch.manual_seed(3)
    weak = train_transform(image_size=16)(image)
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out[0], weak)  # view 0 is the ordinary augmentation
    assert not torch.equal(out[1], out[0])


def test_the_data_modules_make_or_refuse_the_weak_strong_recipe(tmp_path):
    from pckd_lightning.data import DigitsDataModule
    from pckd_lightning.data.gpu_resident import GPUResidentCIFAR100DataModule

    dm = DigitsDataModule(image_size=8, batch_size=4, views=2, view_recipe="weak_strong")
    x, y, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 2, 3, 8, 8) and y.shape == (4,)
    with pytest.raises(ConfigError, match="makes 2 views"):
        DigitsDataModule(views=4, view_recipe="weak_strong")
    with pytest.raises(ConfigError, match="view_recipe='flip'"):
        DigitsDataModule(views=2, view_recipe="flip")
    with pytest.raises(ConfigError, match="no weak/strong recipe"):
        GPUResidentCIFAR100DataModule(tmp_path, device="cpu", views=2, view_recipe="weak_strong")
    cfg = compose_config(["distill=mlkd", "model=cifar100_resnet32x4_resnet8x4", "data=cifar100"])
    assert (cfg.data.views, cfg.data.view_recipe) == (2, "weak_strong")
    assert compose_config(["distill=pckd"]).data.view_recipe == "rotation"


def test_mlkd_configs_hold_the_published_settings():
    cfg = compose_config(["distill=mlkd"]).distill
    assert (cfg.views, cfg.view_recipe) == (2, "weak_strong")
    assert cfg.terms.ce.weight == 0.2  # 0.1 on each of the two views
    for level in ("instance", "batch", "class"):
        assert cfg.terms[level].weight == 0.9
        assert list(cfg.terms[level].temperatures) == [4.0, 3.0, 5.0, 2.0, 6.0]
    ls = compose_config(["distill=mlkd_ls"]).distill
    assert ls.terms.ce.weight == 2.0 and ls.terms.instance.standardize is True
    for level in ("instance", "batch", "class"):
        assert ls.terms[level].weight == 9.0 and ls.terms[level].temperatures[0] == 2.0
    assert build_terms(ls)["instance"].standardize


# -- DOT ---------------------------------------------------------------------------------------------------


def test_dot_steps_as_the_reference_rule_with_two_momenta():
    """Three steps against mdistiller's rule written out: task buffer (with weight decay) at μ_task, KD buffer at
    μ_kd, both starting at their first gradient; a head with no task gradient at (μ_task + μ_kd) / 2."""
    lr, mt, mk, wd = 0.1, 0.825, 0.975, 0.01
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    head = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    opt = DistillationOrientedSGD([w, head], lr=lr, momentum=mt, momentum_kd=mk, weight_decay=wd)
    ref_w, ref_h = [1.0, -2.0], [0.5]
    buf_t = buf_k = buf_h = None
    for step in range(3):
        g_task = [0.3 * (step + 1), -0.1]
        g_kd = [-0.2, 0.05 * step]
        g_head = [0.7 - step]
        w.grad = torch.tensor([a + b for a, b in zip(g_task, g_kd, strict=True)], dtype=torch.float64)
        head.grad = torch.tensor(g_head, dtype=torch.float64)
        opt.add_task_gradients([w, head], [torch.tensor(g_task, dtype=torch.float64), None])
        opt.step()
        d_t = [g + wd * p for g, p in zip(g_task, ref_w, strict=True)]
        buf_t = d_t if buf_t is None else [mt * b + d for b, d in zip(buf_t, d_t, strict=True)]
        buf_k = g_kd if buf_k is None else [mk * b + d for b, d in zip(buf_k, g_kd, strict=True)]
        ref_w = [p - lr * (a + b) for p, a, b in zip(ref_w, buf_t, buf_k, strict=True)]
        d_h = [g + wd * p for g, p in zip(g_head, ref_h, strict=True)]
        buf_h = d_h if buf_h is None else [(mt + mk) / 2 * b + d for b, d in zip(buf_h, d_h, strict=True)]
        ref_h = [p - lr * b for p, b in zip(ref_h, buf_h, strict=True)]
        assert w.tolist() == pytest.approx(ref_w, rel=1e-12), step
        assert head.tolist() == pytest.approx(ref_h, rel=1e-12), step


def test_dot_with_equal_momenta_is_plain_sgd():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    b.data.copy_(a.data)
    dot = DistillationOrientedSGD([a], lr=0.1, momentum=0.9, momentum_kd=0.9, weight_decay=1e-3)
    sgd = torch.optim.SGD([b], lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(4):
        task, kd = torch.randn(5), torch.randn(5)
        a.grad, b.grad = task + kd, task + kd
        dot.add_task_gradients([a], [task])
        dot.step()
        sgd.step()
        # weight decay rides on the task part in DOT and on the whole gradient in SGD: the same sum
        torch.testing.assert_close(a.data, b.data, rtol=1e-5, atol=1e-6)


def test_the_dot_callback_turns_sgd_into_dot_and_splits_the_gradient():
    from functools import partial
    from types import SimpleNamespace

    from pckd_lightning.distillation import DistillationModule, TeacherOptions
    from pckd_lightning.losses import CrossEntropyTerm

    torch.manual_seed(0)
    module = DistillationModule(
        student=create_model("resnet8", 4),
        teacher=create_model("resnet8", 4),
        terms={"ce": CrossEntropyTerm(weight=0.1), "kd": KDTerm(weight=0.9)},
        optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4),
        num_classes=4,
        teacher_options=TeacherOptions(measure=False),
    )
    callback = DOTGradientSplit(delta=0.075)
    callback.setup(None, module, "fit")
    callback.setup(None, module, "test")  # registered with the module once, however often set up
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, DistillationOrientedSGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.05, 5e-4)
    assert (group["momentum"], group["momentum_kd"]) == pytest.approx((0.825, 0.975))
    trainer = SimpleNamespace(optimizers=[optimizer], precision="32-true", accumulate_grad_batches=1)
    callback.on_fit_start(trainer, module)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    handed = []
    module.add_loss_listener(handed.append)
    total = module.training_step((x, y, torch.arange(4)), 0)
    (losses,) = handed  # what the training step hands to DOT
    callback.on_before_backward(trainer, module, total)
    params = module.trainable_parameters()
    expected = torch.autograd.grad(0.1 * losses["ce"], params, retain_graph=True, allow_unused=True)
    for p, g in zip(params, expected, strict=True):
        if g is not None:
            torch.testing.assert_close(optimizer.state[p]["task_grad"], g)
    with pytest.raises(RuntimeError, match="saw no losses"):  # handed over once, dropped at the backward
        callback.on_before_backward(trainer, module, total)
    with pytest.raises(ConfigError, match="momentum"):
        DOTGradientSplit(delta=0.2).dot_optimizer(torch.optim.SGD(params, lr=0.1, momentum=0.9))
    with pytest.raises(ConfigError, match="optimizer=sgd"):
        DOTGradientSplit().dot_optimizer(torch.optim.Adam(params, lr=0.1))
    with pytest.raises(ConfigError, match="task_terms"):
        fresh = DOTGradientSplit(task_terms=["cross_entropy"])
        fresh.on_fit_start(trainer, module)


@pytest.mark.slow
def test_dot_steps_of_2x8_equal_1x16(tmp_path):
    """Two DOT steps under DDP (the task gradient all-reduced by hand, the rest by DDP) equal one process's."""
    import dot_workers

    run_ranks(dot_workers.dot_steps, 2, free_port(), str(tmp_path / "ddp.pt"))
    dot_workers.dot_steps(0, 1, "", str(tmp_path / "single.pt"))
    ddp, single = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    start = dot_workers.kd_module().student.state_dict()
    assert ddp.keys() == single.keys()
    moved = 0
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], atol=1e-5, rtol=0, msg=name)
        moved += not torch.equal(single[name], start[name])
    assert moved > 0


def test_pckd_takes_ls_and_ctkd_on_its_kd_term():
    cfg = compose_config(["distill=pckd", "+distill.terms.kd.standardize=true"])
    assert build_terms(cfg.distill)["kd"].standardize
    cfg = compose_config(
        [
            "distill=pckd",
            "+distill.terms.kd.learned_temperature._target_=pckd_lightning.losses.CurriculumTemperature",
        ]
    )
    kd = build_terms(cfg.distill)["kd"]
    assert isinstance(kd.learned_temperature, CurriculumTemperature) and kd.preview


def test_dot_configs_hold_the_published_settings():
    cfg = compose_config(["distill=kd_dot"]).distill
    assert cfg.callbacks.dot.delta == 0.075 and list(cfg.callbacks.dot.task_terms) == ["ce"]
    assert (cfg.terms.ce.weight, cfg.terms.kd.weight, cfg.terms.kd.temperature) == (0.1, 0.9, 4.0)
    dkd = compose_config(["distill=dkd_dot", "experiment=cifar100_pckd_resnet56_resnet20"]).distill
    assert dkd.callbacks.dot.delta == 0.075 and dkd.terms.dkd.beta == 2


# -- options -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: KDTerm(temperature=0), "temperature must be a number > 0"),
        (
            lambda: KDTerm(learned_temperature=4.0),
            "learned_temperature must be null or a CurriculumTemperature",
        ),
        (lambda: KDTerm(temperature=-1.0), "temperature"),
        (lambda: KDTerm(standardize="yes"), "standardize must be true or false"),
        (lambda: DKDTerm(temperature=0.0), "temperature"),
        (lambda: DKDTerm(standardize=1), "standardize"),
        (lambda: DISTTerm(temperature=0), "temperature"),
        (lambda: DISTTerm(beta=-1), "beta"),
        (lambda: DISTTerm(preview=True), "preview"),
        (lambda: CurriculumTemperature(min_temperature=0), "min_temperature"),
        (lambda: CurriculumTemperature(temperature_range=-1), "temperature_range"),
        (lambda: CurriculumTemperature(reversal_epochs=-1), "reversal_epochs"),
        (lambda: CurriculumTemperature(init="one"), "init"),
    ],
)
def test_a_bad_option_is_refused_naming_it(make, needle):
    with pytest.raises(ConfigError, match=needle):
        make()


@pytest.mark.parametrize(
    ("method", "override", "needle"),
    [
        ("kd_ls", "+distill.terms.kd.standardise=true", "unknown option.*standardise"),
        ("dist", "+distill.terms.dist.tau=4", "unknown option.*tau"),
        ("ctkd", "distill.terms.kd.learned_temperature.min_temperature=0", "min_temperature"),
        ("dkd_ls", "distill.terms.dkd.temperature=-2", "temperature"),
    ],
)
def test_bad_method_options_are_refused_at_start_up(method, override, needle):
    cfg = compose_config([f"distill={method}", override])
    with pytest.raises(ConfigError, match=needle):
        build_terms(cfg.distill)


# -- configs -----------------------------------------------------------------------------------------------


def test_kd_ls_config_holds_the_published_settings_and_the_per_pair_temperature():
    cfg = compose_config(["distill=kd_ls"]).distill
    assert cfg.views == 1 and cfg.preview is None and set(cfg.terms) == {"ce", "kd"}
    assert cfg.terms.ce.weight == 1.0
    assert (cfg.terms.kd.weight, cfg.terms.kd.temperature, cfg.terms.kd.standardize) == (9.0, 2.0, True)
    for pair, t, w in [
        ("resnet32x4_resnet8x4", 2.0, 9.0),
        ("vgg13_vgg8", 3.0, 9.0),
        ("vgg13_MobileNetV2", 3.0, 9.0),
        ("ResNet50_MobileNetV2", 3.0, 1.0),
    ]:
        kd = build_terms(compose_config([f"experiment=cifar100_pckd_{pair}", "distill=kd_ls"]).distill)["kd"]
        assert (kd.temperature, kd.weight, kd.standardize) == (t, w, True), pair


def test_dkd_ls_config_scales_dkd_by_the_kd_weight_at_the_base_temperature():
    cfg = compose_config(["distill=dkd_ls"]).distill
    dkd = cfg.terms.dkd
    assert (dkd.weight, dkd.alpha, dkd.beta, dkd.temperature, dkd.warmup_epochs, dkd.standardize) == (
        9.0,
        1.0,
        8.0,
        2.0,
        20,
        True,
    )
    pair = compose_config(["experiment=cifar100_pckd_resnet56_resnet20", "distill=dkd_ls"]).distill
    assert build_terms(pair)["dkd"].beta == 2  # the pair's DKD β


def test_dist_and_ctkd_configs_hold_the_published_settings():
    dist = compose_config(["distill=dist"]).distill
    assert dist.terms.ce.weight == 1.0
    assert (dist.terms.dist.weight, dist.terms.dist.beta, dist.terms.dist.gamma) == (2.0, 1.0, 1.0)
    assert dist.terms.dist.temperature == 4.0
    ctkd = compose_config(["distill=ctkd"]).distill
    assert (ctkd.terms.ce.weight, ctkd.terms.kd.weight) == (0.1, 0.9)
    kd = build_terms(ctkd)["kd"]
    temp = kd.learned_temperature
    assert isinstance(temp, CurriculumTemperature)
    assert (temp.min_temperature, temp.temperature_range, temp.theta.item()) == (1.0, 20.0, 1.0)
    assert (temp.reversal_start, temp.reversal_end, temp.reversal_epochs) == (0.0, 1.0, 10)


@pytest.mark.parametrize("method", METHODS)
def test_the_preview_switch_weights_the_per_sample_terms_of_each_method(method, tmp_path):
    cfg = compose_config([f"distill={method}", "+preview=all"], output_dir=tmp_path)
    terms = build_terms(cfg.distill)
    assert cfg.distill.preview is not None
    assert {n for n, t in terms.items() if t.preview} == {
        n for n, t in terms.items() if n != "ce" and t.per_sample
    }
    assert terms["ce"].preview is False


# -- through the app ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_with_preview_weights_through_the_app(tmp_path, method):
    summary, values = two_step_run(tmp_path, method, "+preview=all", "trainer.precision=bf16-mixed")
    assert summary["method"] == method
    for term, logged in values.items():
        assert logged and all(math.isfinite(v) for v in logged), (term, logged)


@pytest.mark.slow
def test_ctkd_learns_its_temperature_in_the_app(tmp_path):
    summary, _ = two_step_run(tmp_path, "ctkd")
    state = torch.load(summary["last_checkpoint"], weights_only=False)["state_dict"]
    theta = state["terms.kd.learned_temperature.theta"]
    assert theta.item() != 1.0  # two SGD steps moved it (reversed, weight decay)


@pytest.mark.slow
def test_kd_dot_trains_with_both_momenta_in_the_app(tmp_path):
    summary, _ = two_step_run(tmp_path, "kd_dot")
    optimizer = torch.load(summary["last_checkpoint"], weights_only=False)["optimizer_states"][0]
    group = optimizer["param_groups"][0]
    assert (group["momentum"], group["momentum_kd"]) == pytest.approx((0.825, 0.975))
    states = list(optimizer["state"].values())
    assert states and all({"momentum_buffer", "momentum_kd_buffer"} <= set(st) for st in states)
    assert not any("task_grad" in st for st in states)  # consumed by every step


#: the methods with state that DDP must keep in step: CTKD's learned temperature (a synchronized parameter),
#: MLKD's strong view drawn per rank, DOT's optimizer wrapped around DDP's gradients (DKD + DOT takes the same
#: path as KD + DOT); the others are stateless losses that the every-method runs already cover
DDP_METHODS = {"ctkd": "kd", "mlkd": "instance", "kd_dot": "kd"}  # method: a term it logs


@pytest.mark.slow
def test_each_method_with_state_runs_under_ddp_cpu_in_one_sweep(tmp_path):
    """One sweep of DDP jobs, as a user sweeps them: Lightning starts rank 1 once with the whole sweep, and the
    two ranks run the jobs in step (README, "Multi-GPU"); each job trains its method on two ranks."""
    teacher = save_teacher(tmp_path / "teacher.pth", "resnet20", 10)
    out = tmp_path / "outputs"
    args = [
        str(Path(sys.executable).with_name("pckd-train")),
        "-m",
        f"distill={','.join(DDP_METHODS)}",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "data.image_size=8",
        f"model.teacher.checkpoint={teacher}",
        f"paths.log_dir={out}",
        "callbacks.progress_bar=null",
    ]
    run = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = list(out.rglob("summary.json"))
    jobs = {json.loads(p.read_text())["method"]: p.parent for p in summaries}
    assert len(summaries) == len(DDP_METHODS) and jobs.keys() == DDP_METHODS.keys(), jobs  # a folder per job
    for method, term in DDP_METHODS.items():
        assert (jobs[method] / "train_ddp_process_1.log").exists(), method  # its second rank ran there
        with open(jobs[method] / "csv" / "metrics.csv") as f:
            logged = {k for row in csv.DictReader(f) for k, v in row.items() if v}
        assert {"train/loss", f"train/{term}"} <= logged, method
