"""Baseline distillation terms: values against plain re-computations, gradients, pair shapes, options, configs.

The reference values are written from the methods' formulas with Python loops in float64, never by
calling the code under test (trainable heads are evaluated as given networks where a formula needs them).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from torch import nn

from helpers import avg_pool_2x
from pckd_lightning.distillation import DistillationModule, TeacherOptions
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import (
    ATTerm,
    CCTerm,
    CRDTerm,
    CrossEntropyTerm,
    DKDTerm,
    FitNetTerm,
    LossTerm,
    NSTTerm,
    PKTTerm,
    ReviewKDTerm,
    RKDTerm,
    SPTerm,
    VIDTerm,
)
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import PairInfo
from pckd_lightning.losses.terms.fitnet import hint_regressor
from pckd_lightning.losses.terms.reviewkd import hcl
from pckd_lightning.losses.terms.vid import VIDHead
from pckd_lightning.models import ModelOutput, create_model
from pckd_lightning.run.build import build_terms

REPO = Path(__file__).resolve().parents[1]
REL = 1e-4

# -- plain helpers (lists of floats) --------------------------------------------------------------------


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(dot(v, v))
    return [x / n for x in v] if n > 0 else [0.0] * len(v)


def flat(x) -> list[float]:
    return [x] if not isinstance(x, list) else [v for item in x for v in flat(item)]


def smooth_l1(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1 else d - 0.5


def output(stages, pooled=None, logits=None) -> ModelOutput:
    return ModelOutput(stages=stages, pooled=pooled, logits=logits)


def context(student, teacher, labels=None, indices=None, s_model=None, t_model=None) -> DistillContext:
    if labels is None:
        labels = torch.zeros(student.pooled.shape[0] if student.pooled is not None else 1, dtype=torch.long)
    return DistillContext(
        student=student,
        teacher=teacher,
        labels=labels,
        student_model=s_model,
        teacher_model=t_model,
        indices=indices,
    )


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- values ---------------------------------------------------------------------------------------------


def plain_dkd(zs, zt, labels, alpha, beta, t):
    out = []
    for s_row, t_row, c in zip(zs.tolist(), zt.tolist(), labels.tolist(), strict=True):
        ps, pt = softmax(s_row, t), softmax(t_row, t)
        tckd = kl([pt[c], 1 - pt[c]], [ps[c], 1 - ps[c]])
        qs = softmax([v for j, v in enumerate(s_row) if j != c], t)
        qt = softmax([v for j, v in enumerate(t_row) if j != c], t)
        out.append(t * t * (alpha * tckd + beta * kl(qt, qs)))
    return out


@pytest.mark.parametrize(("alpha", "beta", "t"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_plain_computation_and_warms_up(alpha, beta, t):
    zs, zt = 3 * randn(6, 7, seed=1), 3 * randn(6, 7, seed=2)
    labels = torch.tensor([0, 3, 6, 2, 2, 5])
    term = DKDTerm(alpha=alpha, beta=beta, temperature=t, warmup_epochs=20)
    ctx = context(output([], zs[:, :1], zs), output([], zt[:, :1], zt), labels)
    expected = plain_dkd(zs, zt, labels, alpha, beta, t)
    term.on_train_epoch_start(25)
    assert term.weighted(term(ctx)).tolist() == pytest.approx(expected, rel=REL)
    term.on_train_epoch_start(5)  # linear warm-up of its share of the total: 5 / 20
    assert term.weighted(term(ctx)).tolist() == pytest.approx([0.25 * v for v in expected], rel=REL)
    assert term(ctx).tolist() == pytest.approx(expected, rel=REL)  # its value, as logged, is unscaled
    term.on_train_epoch_start(1)
    assert term.weighted(term(ctx)).tolist() == pytest.approx([v / 20 for v in expected], rel=REL)


@pytest.mark.slow
def test_a_compiled_dkd_follows_its_warm_up_without_recompiling():
    zs, zt = 3 * randn(6, 7, seed=1), 3 * randn(6, 7, seed=2)
    labels = torch.tensor([0, 3, 6, 2, 2, 5])
    ctx = context(output([], zs[:, :1], zs), output([], zt[:, :1], zt), labels)
    eager, compiled = DKDTerm(warmup_epochs=20), DKDTerm(warmup_epochs=20)
    compiled.compile()
    for epoch in (1, 2, 7, 30):
        for term in (eager, compiled):
            term.on_train_epoch_start(epoch)
        # compiled once in epoch 1; a later epoch must not compile again
        with torch._dynamo.config.patch(error_on_recompile=epoch > 1):
            got, expected = compiled.weighted(compiled(ctx)), eager.weighted(eager(ctx))
            assert got.tolist() == pytest.approx(expected.tolist(), rel=1e-5), epoch


def test_dkd_without_the_epoch_hook_says_what_the_module_must_call():
    z = randn(2, 4)
    ctx = context(output([], z, z), output([], z, z), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="on_train_epoch_start"):
        DKDTerm().weighted(DKDTerm()(ctx))
    plain = DKDTerm(warmup_epochs=0)
    assert plain.weighted(plain(ctx)).shape == (2,)  # no warm-up, no epoch needed


def test_fitnet_regressor_rules_and_value():
    cases = [((3, 8, 8), (5, 4, 4)), ((3, 4, 4), (5, 8, 8)), ((3, 6, 6), (5, 4, 4)), ((3, 4, 4), (5, 4, 4))]
    for s, t in cases:
        reg = hint_regressor(s, t)
        assert reg(torch.zeros(2, *s)).shape == (2, *t)
    assert hint_regressor((3, 4, 4), (5, 16, 16)) is None
    term = FitNetTerm(hint_layer=1)
    term.regressor = hint_regressor((3, 4, 4), (5, 2, 2))
    f_s, f_t = randn(2, 3, 4, 4, seed=3).float(), randn(2, 5, 2, 2, seed=4).float()
    ctx = context(output([None, f_s]), output([None, f_t]), torch.zeros(2, dtype=torch.long))
    got = term(ctx)
    with torch.no_grad():
        mapped = term.regressor(f_s).tolist()  # the regressor is a given network; the loss is the formula
    expected = [
        sum((a - b) ** 2 for a, b in zip(flat(m), flat(t), strict=True)) / 20
        for m, t in zip(mapped, f_t.tolist(), strict=True)
    ]
    assert got.tolist() == pytest.approx(expected, rel=REL)


def plain_attention(f: list, p: float) -> list[float]:
    c = len(f)
    a = [
        sum(abs(f[k][i][j]) ** p for k in range(c)) / c for i in range(len(f[0])) for j in range(len(f[0][0]))
    ]
    return unit(a)


def test_at_matches_plain_computation():
    s1, s2 = randn(2, 3, 4, 4, seed=5), randn(2, 2, 2, 2, seed=6)
    t1, t2, t3 = randn(2, 5, 2, 2, seed=7), randn(2, 4, 2, 2, seed=8), randn(2, 4, 1, 1, seed=9)
    ctx = context(output([None, s1, s2]), output([None, t1, t2, t3]))  # teacher's extra stage is unpaired
    expected = []
    for i in range(2):
        total = 0.0
        for fs, ft in ((avg_pool_2x(s1[i].tolist()), t1[i].tolist()), (s2[i].tolist(), t2[i].tolist())):
            a_s, a_t = plain_attention(fs, 2), plain_attention(ft, 2)
            total += sum((x - y) ** 2 for x, y in zip(a_s, a_t, strict=True)) / len(a_s)
        expected.append(total)
    assert ATTerm()(ctx).tolist() == pytest.approx(expected, rel=REL)


def test_sp_matches_plain_computation():
    fs, ft = randn(4, 3, 2, 2, seed=10), randn(4, 5, 2, 2, seed=11)
    ctx = context(output([None, fs]), output([None, ft]))

    def gram(f):
        rows = [flat(x) for x in f.tolist()]
        g = [[dot(a, b) for b in rows] for a in rows]
        return [unit(r) for r in g]

    gs, gt = gram(fs), gram(ft)
    expected = sum((gt[i][j] - gs[i][j]) ** 2 for i in range(4) for j in range(4)) / 16
    got = SPTerm()(ctx)
    assert got.shape == () and got.item() == pytest.approx(expected, rel=REL)


def test_pkt_matches_plain_computation():
    fs, ft = randn(5, 4, seed=12), randn(5, 6, seed=13)
    eps = 1e-7

    def probs(f):
        rows = [[v / (math.sqrt(dot(r, r)) + eps) for v in r] for r in f.tolist()]
        k = [[(dot(a, b) + 1) / 2 for b in rows] for a in rows]
        return [[v / sum(r) for v in r] for r in k]

    ps, pt = probs(fs), probs(ft)
    expected = sum(
        pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(5) for j in range(5)
    )
    got = PKTTerm()(context(output([], fs), output([], ft)))
    assert got.item() == pytest.approx(expected / 25, rel=REL)


def test_rkd_matches_plain_computation():
    fs, ft = randn(5, 3, seed=14), randn(5, 4, seed=15)

    def distances(f):
        rows = f.tolist()
        d = [[math.dist(a, b) if i != j else 0.0 for j, b in enumerate(rows)] for i, a in enumerate(rows)]
        mean = sum(v for r in d for v in r if v > 0) / sum(1 for r in d for v in r if v > 0)
        return [v / mean for r in d for v in r]

    def angles(f):
        rows = f.tolist()
        n = len(rows)
        diff = [
            [unit([b - a for a, b in zip(rows[i], rows[j], strict=True)]) for j in range(n)] for i in range(n)
        ]
        return [dot(diff[i][j], diff[i][k]) for i in range(n) for j in range(n) for k in range(n)]

    ds, dt = distances(fs), distances(ft)
    a_s, a_t = angles(fs), angles(ft)
    loss_d = sum(smooth_l1(a, b) for a, b in zip(ds, dt, strict=True)) / len(ds)
    loss_a = sum(smooth_l1(a, b) for a, b in zip(a_s, a_t, strict=True)) / len(a_s)
    got = RKDTerm(distance_weight=25, angle_weight=50)(context(output([], fs), output([], ft)))
    assert got.item() == pytest.approx(25 * loss_d + 50 * loss_a, rel=REL)


def test_cc_matches_plain_computation():
    fs, ft = randn(4, 5, seed=16).float(), randn(4, 6, seed=17).float()
    term = CCTerm(feat_dim=3)
    term.build(
        PairInfo(
            student=SimpleNamespace(feature_dim=5), teacher=SimpleNamespace(feature_dim=6), num_classes=2
        )
    )

    def embed(layer, f):
        w, b = layer.weight.tolist(), layer.bias.tolist()
        return [[dot(w[o], row) + b[o] for o in range(3)] for row in f.tolist()]

    es, et = embed(term.embed_student, fs), embed(term.embed_teacher, ft)
    delta = [[abs(a - b) for a, b in zip(rs, rt, strict=True)] for rs, rt in zip(es, et, strict=True)]
    expected = sum(dot(delta[i], delta[i + 1]) for i in range(3)) / 3
    assert term(context(output([], fs), output([], ft))).item() == pytest.approx(expected, rel=REL)


def test_vid_matches_plain_computation():
    s1, s2 = randn(2, 3, 4, 4, seed=18).float(), randn(2, 2, 2, 2, seed=19).float()
    t1, t2 = randn(2, 4, 2, 2, seed=20).float(), randn(2, 5, 2, 2, seed=21).float()
    term = VIDTerm(init_var=5.0, eps=1e-5)
    term.heads = nn.ModuleList([VIDHead(3, 4, 4, 5.0, 1e-5), VIDHead(2, 5, 5, 5.0, 1e-5)])
    with torch.no_grad():
        term.heads[1].log_scale.copy_(torch.linspace(-1, 2, 5))
    assert math.log1p(math.exp(term.heads[0].log_scale[0].item())) + 1e-5 == pytest.approx(5.0, rel=1e-6)
    got = term(context(output([None, s1, s2]), output([None, t1, t2])))
    expected = [0.0, 0.0]
    pooled_s1 = torch.tensor([avg_pool_2x(s1[i].tolist()) for i in range(2)])
    for head, fs, ft in ((term.heads[0], pooled_s1, t1), (term.heads[1], s2, t2)):
        with torch.no_grad():
            mu = head.mean(fs.float()).tolist()  # the mean network is given; the likelihood is the formula
        var = [math.log(1 + math.exp(v)) + 1e-5 for v in head.log_scale.tolist()]
        for i in range(2):
            terms = [
                0.5 * ((mu[i][c][h][w] - ft[i][c][h][w].item()) ** 2 / var[c] + math.log(var[c]))
                for c in range(len(var))
                for h in range(2)
                for w in range(2)
            ]
            expected[i] += sum(terms) / len(terms)
    assert got.tolist() == pytest.approx(expected, rel=REL)


def test_nst_matches_plain_computation():
    s1, t1 = randn(2, 3, 4, 4, seed=22), randn(2, 2, 2, 2, seed=23)
    s2, t2 = randn(2, 2, 2, 2, seed=24), randn(2, 4, 2, 2, seed=25)
    got = NSTTerm()(context(output([None, s1, s2]), output([None, t1, t2])))

    def maps(f):
        return [unit(flat(ch)) for ch in f]

    def mean_kernel(a, b):
        return sum(dot(x, y) ** 2 for x in a for y in b) / (len(a) * len(b))

    expected = []
    for i in range(2):
        total = 0.0
        for fs, ft in ((avg_pool_2x(s1[i].tolist()), t1[i].tolist()), (s2[i].tolist(), t2[i].tolist())):
            ms, mt = maps(fs), maps(ft)
            total += mean_kernel(mt, mt) + mean_kernel(ms, ms) - 2 * mean_kernel(ms, mt)
        expected.append(total)
    assert got.tolist() == pytest.approx(expected, rel=REL)


def plain_nce(scores: list[float], n: int) -> float:
    k = len(scores) - 1
    noise = k / n
    pos = math.log(scores[0] / (scores[0] + noise + 1e-7))
    return -(pos + sum(math.log(noise / (p + noise + 1e-7)) for p in scores[1:]))


def test_crd_matches_plain_computation_and_updates_its_banks():
    n, b = 10, 3
    term = CRDTerm(num_data=n, feat_dim=3, nce_k=4, nce_t=0.5, nce_m=0.5)
    term.build(
        PairInfo(
            student=SimpleNamespace(feature_dim=5), teacher=SimpleNamespace(feature_dim=6), num_classes=3
        )
    )
    indices = torch.tensor([7, 2, 4])
    sample = torch.tensor([[7, 0, 1, 9, 3], [2, 5, 6, 8, 0], [4, 1, 1, 3, 9]])
    term.sample_contrast = lambda idx, labels: sample
    fs, ft = randn(b, 5, seed=26).float(), randn(b, 6, seed=27).float()
    ctx = context(output([], fs), output([], ft), torch.tensor([0, 1, 2]), indices=indices)
    mem_s, mem_t = term.memory_student.tolist(), term.memory_teacher.tolist()

    def embed(layer, f):
        w, bias = layer.weight.tolist(), layer.bias.tolist()
        return [unit([dot(w[o], row) + bias[o] for o in range(3)]) for row in f.tolist()]

    vs, vt = embed(term.embed_student, fs), embed(term.embed_teacher, ft)
    sc_s = [[math.exp(dot(mem_t[j], vs[i]) / 0.5) for j in sample[i].tolist()] for i in range(b)]
    sc_t = [[math.exp(dot(mem_s[j], vt[i]) / 0.5) for j in sample[i].tolist()] for i in range(b)]
    z_s = sum(map(sum, sc_s)) / (b * 5) * n
    z_t = sum(map(sum, sc_t)) / (b * 5) * n
    expected = [
        plain_nce([v / z_s for v in sc_s[i]], n) + plain_nce([v / z_t for v in sc_t[i]], n) for i in range(b)
    ]
    got = term(ctx)
    assert got.tolist() == pytest.approx(expected, rel=REL)
    assert term.normalizers.tolist() == pytest.approx([z_s, z_t], rel=REL)
    for i, j in enumerate(indices.tolist()):  # momentum 0.5 then renormalized
        assert term.memory_student[j].tolist() == pytest.approx(
            unit([0.5 * a + 0.5 * c for a, c in zip(mem_s[j], vs[i], strict=True)]), rel=REL
        )
        assert term.memory_teacher[j].tolist() == pytest.approx(
            unit([0.5 * a + 0.5 * c for a, c in zip(mem_t[j], vt[i], strict=True)]), rel=REL
        )
    untouched = [j for j in range(n) if j not in indices.tolist()]
    assert term.memory_student[untouched].tolist() == [mem_s[j] for j in untouched]
    assert term.bank_labels[indices].tolist() == [0, 1, 2]
    # Z stays fixed after the first batch; in eval mode the banks are not written
    term.eval()
    before = term.memory_student.clone()
    term(ctx)
    assert term.normalizers.tolist() == pytest.approx([z_s, z_t], rel=REL)
    assert torch.equal(term.memory_student, before)


def test_crd_negatives_avoid_the_anchor_class_and_the_positive_is_the_image():
    term = CRDTerm(num_data=40, nce_k=50, max_redraws=60)
    term.build(
        PairInfo(
            student=SimpleNamespace(feature_dim=4), teacher=SimpleNamespace(feature_dim=4), num_classes=2
        )
    )
    term.set_dataset_labels(torch.arange(40) % 2)
    idx, labels = torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 1])
    sample = term.sample_contrast(idx, labels)
    assert sample.shape == (4, 51) and sample[:, 0].tolist() == idx.tolist()
    assert ((sample[:, 1:] % 2) != labels[:, None]).all()
    uniform = CRDTerm(num_data=40, nce_k=50, negatives="uniform")
    uniform.build(
        PairInfo(
            student=SimpleNamespace(feature_dim=4), teacher=SimpleNamespace(feature_dim=4), num_classes=2
        )
    )
    s = uniform.sample_contrast(idx, labels)
    assert s.shape == (4, 51) and s.min() >= 0 and s.max() < 40


def test_reviewkd_hcl_matches_plain_computation():
    for size in (8, 4, 1):
        fs, ft = randn(2, 3, size, size, seed=size), randn(2, 3, size, size, seed=size + 1)
        expected = []
        for i in range(2):
            a, b = fs[i].tolist(), ft[i].tolist()
            total, weights, w = 0.0, 0.0, 1.0
            levels = [size] + [lv for lv in (4, 2, 1) if lv < size]
            for lv in levels:
                pa, pb = a, b
                while len(pa[0]) > lv:
                    pa, pb = avg_pool_2x(pa), avg_pool_2x(pb)
                fa, fb = flat(pa), flat(pb)
                total += w * sum((x - y) ** 2 for x, y in zip(fa, fb, strict=True)) / len(fa)
                weights += w
                w /= 2
            expected.append(total / weights)
        assert hcl(fs, ft).tolist() == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("make", [SPTerm, PKTTerm, RKDTerm, NSTTerm], ids=["sp", "pkt", "rkd", "nst"])
def test_pairwise_formulas_ignore_bfloat16_autocast(make):
    fs, ft = 5 * randn(6, 4, 3, 3, seed=30).float(), 5 * randn(6, 5, 3, 3, seed=31).float()
    ctx = context(output([None, fs], fs.mean((2, 3))), output([None, ft], ft.mean((2, 3))))
    term = make()
    exact = term(ctx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = term(ctx)
    assert under_autocast.dtype == torch.float32
    assert under_autocast.tolist() == pytest.approx(exact.tolist(), rel=1e-5)


# -- pairs: shapes and gradients ------------------------------------------------------------------------

PAIRS = [("resnet56", "resnet20"), ("vgg13", "MobileNetV2")]
TERMS = {
    "dkd": DKDTerm,
    "fitnet": FitNetTerm,
    "at": ATTerm,
    "sp": SPTerm,
    "pkt": PKTTerm,
    "rkd": RKDTerm,
    "cc": CCTerm,
    "vid": VIDTerm,
    "nst": NSTTerm,
    "crd": partial(CRDTerm, num_data=16, nce_k=8),
    "reviewkd": ReviewKDTerm,
}


@pytest.fixture(scope="module", params=PAIRS, ids=[f"{t}->{s}" for t, s in PAIRS])
def pair(request):
    teacher_name, student_name = request.param
    torch.manual_seed(0)
    teacher, student = create_model(teacher_name, 10), create_model(student_name, 10)
    x = torch.randn(4, 3, 32, 32)
    # the teacher's outputs keep their graph on purpose: a term must not send gradient into them
    return SimpleNamespace(
        student=student,
        teacher=teacher,
        s_out=student(x, with_features=True),
        t_out=teacher(x, with_features=True),
        labels=torch.tensor([0, 1, 2, 1]),
        indices=torch.tensor([3, 0, 15, 7]),
    )


@pytest.mark.parametrize("name", TERMS)
def test_term_on_pair_has_its_shape_and_trains_the_student_and_heads_only(pair, name):
    term = TERMS[name]()
    term.build(PairInfo(student=pair.student, teacher=pair.teacher, num_classes=10))
    assert pair.student.training and pair.teacher.training  # the dry forward restored the modes
    if term.warmup_epochs:  # a warm-up needs the epoch
        term.on_train_epoch_start(1)
    ctx = context(pair.s_out, pair.t_out, pair.labels, pair.indices, pair.student, pair.teacher)
    value = term(ctx)
    assert term.views == "first"
    assert value.shape == ((4,) if term.per_sample else ())
    assert torch.isfinite(value).all()
    s_params, heads, t_params = (
        list(pair.student.parameters()),
        list(term.parameters()),
        list(pair.teacher.parameters()),
    )
    grads = torch.autograd.grad(
        value.sum(), s_params + heads + t_params, retain_graph=True, allow_unused=True
    )
    g_s, g_h, g_t = (
        grads[: len(s_params)],
        grads[len(s_params) : len(s_params) + len(heads)],
        grads[-len(t_params) :],
    )
    assert any(g is not None and g.abs().sum() > 0 for g in g_s)
    assert all(g is not None for g in g_h), "every head parameter takes part"
    assert all(g is None for g in g_t), "no gradient may reach the teacher"


def test_dkd_with_preview_weights_in_the_module():
    torch.manual_seed(0)
    term = DKDTerm(preview=True)
    weights = torch.tensor([1.0, 0.5, 0.25, 1.0])
    module = DistillationModule(
        student=create_model("resnet8", 5),
        teacher=create_model("resnet14", 5),
        terms={"ce": CrossEntropyTerm(), "dkd": term},
        optimizer=partial(torch.optim.SGD, lr=0.1),
        num_classes=5,
        teacher_options=TeacherOptions(measure=False),
        preview=lambda ce, record=True: weights,  # fixed weights in place of PreviewWeights
    )
    term.on_train_epoch_start(10)
    batch = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), torch.arange(4)
    ctx = module.step.context(batch)
    losses = module.step.losses(ctx)
    expected = (weights * term(ctx.first_view())).mean()
    assert losses["dkd"].item() == pytest.approx(expected.item(), rel=1e-5)


# -- options --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_pair():
    torch.manual_seed(0)
    return PairInfo(student=create_model("resnet8", 10), teacher=create_model("resnet20", 10), num_classes=10)


@pytest.fixture(scope="module")
def small_outputs(small_pair):
    """Both models' outputs on 4 images of the digits demo's size (16x16) with V views, cached per V."""
    cache = {}

    def outputs(views: int):
        if views not in cache:
            x = torch.randn(4 * views, 3, 16, 16)
            cache[views] = (
                small_pair.student(x, with_features=True),
                small_pair.teacher(x, with_features=True),
            )
        return cache[views]

    return outputs


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: FitNetTerm(hint_layer=7, input_size=16), "hint_layer=7.*valid values: 0, 1, 2, 3"),
        (lambda: FitNetTerm(hint_layer=-1), "hint_layer"),
        (lambda: FitNetTerm(input_size=0), "input_size"),
        (lambda: DKDTerm(temperature=0), "temperature"),
        (lambda: DKDTerm(beta=-1), "beta"),
        (lambda: DKDTerm(warmup_epochs=-1), "warmup_epochs"),
        (lambda: ATTerm(p=0), "p must"),
        (lambda: RKDTerm(eps=0), "eps"),
        (lambda: CCTerm(feat_dim=0), "feat_dim"),
        (lambda: VIDTerm(init_var=0), "init_var"),
        (lambda: ReviewKDTerm(max_mid_channels=0), "max_mid_channels"),
        (lambda: CRDTerm(num_data=100, mode="relax"), "mode='relax'.*valid values: exact"),
        (
            lambda: CRDTerm(num_data=100, negatives="hard"),
            "negatives='hard'.*valid values: other_class, uniform",
        ),
        (lambda: CRDTerm(num_data=100, nce_m=1.0), "nce_m"),
        (lambda: CRDTerm(num_data=1), "num_data"),
        (lambda: CRDTerm(), "num_data"),
        (lambda: SPTerm(preview=True), "preview"),
    ],
)
def test_a_bad_option_raises_a_config_error_naming_it(make, needle, small_pair):
    with pytest.raises(ConfigError, match=needle):
        make().build(small_pair)


def test_crd_index_outside_the_bank_names_num_data(small_pair):
    term = CRDTerm(num_data=4, nce_k=2)
    term.build(small_pair)
    out = small_pair.student(torch.zeros(2, 3, 16, 16), with_features=True)
    ctx = context(out, out, torch.tensor([0, 1]), torch.tensor([1, 9]))
    with pytest.raises(ConfigError, match="num_data=4"):
        term(ctx)


# -- configs --------------------------------------------------------------------------------------------

DISTILLS = sorted(p.stem for p in (REPO / "conf" / "distill").glob("*.yaml"))
PUBLISHED = {  # method: (term, weight, {option: value}), CE weight 1 for all of them
    "dkd": ("dkd", 1.0, {"alpha": 1.0, "beta": 8.0, "temperature": 4.0, "warmup_epochs": 20}),
    "fitnet": ("fitnet", 100.0, {"hint_layer": 2}),
    "at": ("at", 1000.0, {"p": 2.0}),
    "sp": ("sp", 3000.0, {}),
    "pkt": ("pkt", 30000.0, {}),
    "rkd": ("rkd", 1.0, {"distance_weight": 25.0, "angle_weight": 50.0}),
    "cc": ("cc", 0.02, {"feat_dim": 128}),
    "vid": ("vid", 1.0, {"init_var": 5.0, "eps": 1e-5}),
    "nst": ("nst", 50.0, {}),
    "crd": ("crd", 0.8, {"feat_dim": 128, "nce_k": 16384, "nce_t": 0.07, "nce_m": 0.5, "mode": "exact"}),
    "reviewkd": ("reviewkd", 5.0, {"warmup_epochs": 20}),
}


def compose_distill(name: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[f"distill={name}"])


@pytest.mark.parametrize("name", DISTILLS)
def test_every_distill_config_composes_builds_and_runs(name, small_pair, small_outputs):
    cfg = compose_distill(name)
    with open_dict(cfg):
        for term_cfg in cfg.distill.terms.values():
            if term_cfg is not None and "num_data" in term_cfg and term_cfg.num_data is None:
                term_cfg.num_data = 64  # the runner's job: the training-set size
    terms = build_terms(cfg.distill)
    assert terms and all(isinstance(t, LossTerm) for t in terms.values())
    labels = torch.arange(4).repeat_interleave(cfg.distill.views)
    s_out, t_out = small_outputs(cfg.distill.views)
    ctx = context(s_out, t_out, labels, torch.arange(4), small_pair.student, small_pair.teacher)
    ctx.num_views = cfg.distill.views
    for term in terms.values():
        term.build(small_pair)
        if term.skip_reason:
            continue
        if term.warmup_epochs:  # a warm-up needs the epoch
            term.on_train_epoch_start(1)
        value = term(ctx if term.views == "all" else ctx.first_view())
        assert torch.isfinite(value).all()


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_baseline_configs_hold_the_published_settings(name):
    cfg = compose_distill(name).distill
    assert cfg.name == name and cfg.views == 1 and cfg.preview is None
    assert set(cfg.terms) == {"ce", PUBLISHED[name][0]}
    assert cfg.terms.ce.weight == 1.0
    term_name, weight, options = PUBLISHED[name]
    assert cfg.terms[term_name].weight == weight
    for key, value in options.items():
        assert cfg.terms[term_name][key] == value, key
