"""Property tests of the distillation losses: finite values and gradients under extreme inputs, invariances.

Inputs are drawn by hypothesis as (seed, kind, per-sample log10 norm): logits up to |z| = 1e4, all-equal
and one-hot-like logits; features with per-sample norms from 1e-6 to 1e4 (mixed within one batch),
all-zero, constant, one-hot and ReLU-like (many exact zeros) samples. Every loss runs in float32, with
float32 inputs under ``torch.autocast("cpu", dtype=torch.bfloat16)`` and with bfloat16 inputs under it
(what a bf16-mixed run feeds it), and must return a float32 value; the init-stage losses (AB, FSP, FT)
are checked the same way.
Shapes are small (B = 4, C = 5 classes, feature dim 8, maps up to 8x8) so the whole file stays fast;
``derandomize=True`` makes the examples the same on every run.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import partial

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from pckd_lightning.losses import functional as LF
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import (
    ABTerm,
    ATTerm,
    CategoryContrastTerm,
    CCTerm,
    CenterAlignTerm,
    CRDTerm,
    CrossEntropyTerm,
    DKDTerm,
    FactorTransferTerm,
    FeatureAlignTerm,
    FitNetTerm,
    FSPTerm,
    InitStageTerm,
    KDTerm,
    NSTTerm,
    PairInfo,
    PKTTerm,
    ReviewKDTerm,
    RKDTerm,
    SPTerm,
    VIDTerm,
)
from pckd_lightning.losses.terms.attention import attention_map
from pckd_lightning.losses.terms.correlation import correlation_congruence
from pckd_lightning.losses.terms.crd import nce_loss
from pckd_lightning.losses.terms.dkd import dkd
from pckd_lightning.losses.terms.nst import nst
from pckd_lightning.losses.terms.pkt import pkt
from pckd_lightning.losses.terms.reviewkd import hcl
from pckd_lightning.losses.terms.rkd import rkd
from pckd_lightning.losses.terms.similarity import similarity_preserving
from pckd_lightning.models.base import ModelOutput, ZooModel

B, NUM_CLASSES, DIM = 4, 5, 8
# (C, H, W) of the stem and the stage outputs; the pooled feature has DIM entries for both models
STUDENT_STAGES = [(4, 8, 8), (4, 8, 8), (8, 4, 4), (8, 2, 2)]
TEACHER_STAGES = [(4, 8, 8), (6, 8, 8), (8, 4, 4), (12, 2, 2)]
#: float32 throughout; float32 inputs with the heads under bf16 autocast; bf16 inputs under bf16 autocast
PRECISIONS = ["float32", "float32-autocast", "bf16-autocast"]

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


pytestmark = pytest.mark.usefixtures("one_thread")


# -- inputs ---------------------------------------------------------------------------------------------

FEATURE_KINDS = ("gauss", "relu", "zeros", "const", "onehot")
LOGIT_KINDS = ("gauss", "equal", "onehot", "tied")
# log10 of a sample's norm; the bounds themselves are what hypothesis tries first
log_norms = st.floats(min_value=-6.0, max_value=4.0, allow_nan=False)


class Drawn:
    """A drawn value with a short repr: a failing example prints its recipe, not kilobytes of numbers."""

    def __init__(self, value, recipe: str) -> None:
        self.value = value
        self.recipe = recipe

    def __repr__(self) -> str:
        return self.recipe


def _feature_tensor(shape, kind: str, seed: int, exps: list[float]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flat = torch.randn(shape, generator=g, dtype=torch.float64).flatten(1)
    if kind == "zeros":
        return torch.zeros(shape)
    if kind == "relu":
        flat = flat.clamp(min=0)
        flat[:, 0] = flat[:, 0].abs() + 0.1  # at least one positive entry per sample
    elif kind == "const":
        flat = torch.ones_like(flat) * torch.sign(flat[:, :1])
    elif kind == "onehot":
        hot = torch.randint(0, flat.shape[1], (shape[0],), generator=g)
        flat = torch.nn.functional.one_hot(hot, flat.shape[1]).double()
    scale = torch.tensor([10.0**e for e in exps], dtype=torch.float64)[:, None]
    return (flat / flat.norm(dim=1, keepdim=True) * scale).view(shape).float()


@st.composite
def drawn_features(draw, shape: tuple[int, ...], kinds: tuple[str, ...] = FEATURE_KINDS) -> Drawn:
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**16))
    exps = draw(st.lists(log_norms, min_size=shape[0], max_size=shape[0]))
    recipe = f"features({shape}, {kind!r}, seed={seed}, log10_norms={[round(e, 2) for e in exps]})"
    return Drawn(_feature_tensor(shape, kind, seed, exps), recipe)


def features(shape: tuple[int, ...], kinds: tuple[str, ...] = FEATURE_KINDS):
    """A float32 [B, ...] tensor whose samples have norms 10^-6 .. 10^4 (each drawn), of one kind."""
    return drawn_features(shape, kinds).map(lambda d: d.value)


def _logit_tensor(batch: int, classes: int, kind: str, seed: int, exps: list[float]) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        z = torch.randn(batch, classes, generator=g)
        z = z / z.abs().amax(dim=1, keepdim=True)
    elif kind == "equal":
        z = torch.ones(batch, classes) * torch.sign(torch.randn(batch, 1, generator=g))
    elif kind == "onehot":
        hot = torch.randint(0, classes, (batch,), generator=g)
        z = 2.0 * torch.nn.functional.one_hot(hot, classes) - 1.0
    else:  # two maxima tied at +s, the rest at -s
        z = -torch.ones(batch, classes)
        z[:, :2] = 1.0
    return (z * torch.tensor([10.0**e for e in exps])[:, None]).float()


@st.composite
def drawn_logits(draw, batch: int = B, classes: int = NUM_CLASSES) -> Drawn:
    kind = draw(st.sampled_from(LOGIT_KINDS))
    seed = draw(st.integers(0, 2**16))
    exps = draw(st.lists(st.floats(-3.0, 4.0), min_size=batch, max_size=batch))
    recipe = f"logits({kind!r}, seed={seed}, log10_max={[round(e, 2) for e in exps]})"
    return Drawn(_logit_tensor(batch, classes, kind, seed, exps), recipe)


def logits(batch: int = B, classes: int = NUM_CLASSES):
    """Float32 logits [B, C] with |z| up to 1e4: Gaussian, all-equal, one-hot-like or with tied maxima."""
    return drawn_logits(batch, classes).map(lambda d: d.value)


labels_st = st.lists(st.integers(0, NUM_CLASSES - 1), min_size=B, max_size=B).map(torch.tensor)


@st.composite
def model_outputs(draw, stages: list[tuple[int, int, int]], batch: int = B) -> Drawn:
    """A ModelOutput (in ``.value``) of extreme stage maps, pooled features and logits.

    Each tensor has its own kind; a sample's norm (10^-6 .. 10^4) is shared by its maps and pooled
    feature, as it would be in a network, so a batch mixes tiny and huge samples.
    """
    kinds = [draw(st.sampled_from(FEATURE_KINDS)) for _ in range(len(stages) + 1)]
    seed = draw(st.integers(0, 2**16))
    exps = draw(st.lists(log_norms, min_size=batch, max_size=batch))
    shapes = [(batch, *s) for s in stages] + [(batch, DIM)]
    tensors = [
        _feature_tensor(shape, k, seed + i, exps)
        for i, (shape, k) in enumerate(zip(shapes, kinds, strict=True))
    ]
    z = draw(drawn_logits(batch))
    out = ModelOutput(tensors[:-1], tensors[-1], z.value)
    rounded = [round(e, 2) for e in exps]
    return Drawn(out, f"ModelOutput(kinds={kinds}, seed={seed}, log10_norms={rounded}, logits={z})")


# -- a pair of stand-in models (the terms only read shapes and the classifier) -----------------------------


class ShapeModel(ZooModel):
    """Returns zero features of fixed shapes (for ``probe_shapes``) and owns a real classifier."""

    def __init__(self, stages: list[tuple[int, int, int]], center_scale: float = 1.0) -> None:
        super().__init__()
        self.stages = stages
        self.feature_dim = DIM
        self.fc = nn.Linear(DIM, NUM_CLASSES)
        with torch.no_grad():  # rows of norm `center_scale`, e.g. 1e-6 or 1e4
            self.fc.weight.copy_(nn.functional.normalize(self.fc.weight, dim=1) * center_scale)
            self.fc.bias.mul_(center_scale)

    def forward_features(self, x: torch.Tensor) -> ModelOutput:
        b = x.shape[0]
        pooled = x.new_zeros(b, DIM)
        return ModelOutput([x.new_zeros(b, *s) for s in self.stages], pooled, self.fc(pooled))

    @property
    def classifier_layer(self) -> nn.Linear:
        return self.fc


TERMS = {
    "ce": CrossEntropyTerm,
    "kd": KDTerm,
    "dkd": DKDTerm,
    "category_contrast": CategoryContrastTerm,
    "center_align": CenterAlignTerm,
    "feature_align": FeatureAlignTerm,
    "fitnet": FitNetTerm,
    "at": ATTerm,
    "at_p1.5": partial(ATTerm, p=1.5),
    "at_p3": partial(ATTerm, p=3.0),
    "at_p0.5": partial(ATTerm, p=0.5),
    "sp": SPTerm,
    "pkt": PKTTerm,
    "rkd": RKDTerm,
    "cc": CCTerm,
    "vid": VIDTerm,
    "nst": NSTTerm,
    "crd": partial(CRDTerm, nce_k=8),
    "reviewkd": ReviewKDTerm,
    "ab": ABTerm,
    "fsp": FSPTerm,
    "ft": FactorTransferTerm,
    "ft_l2_p1": partial(FactorTransferTerm, distance="l2", p=1),
}
#: FSP compares Gram matrices between maps, so it needs a teacher with the student's channel counts
TEACHER_STAGES_OF = {"fsp": STUDENT_STAGES}
#: batch-relational terms: one value per batch, unchanged when the batch is permuted
BATCH_INVARIANT = ("sp", "pkt", "rkd")
#: per-sample terms whose value follows the samples when the batch is permuted
PER_SAMPLE_EQUIVARIANT = (
    "ce",
    "kd",
    "dkd",
    "category_contrast",
    "fitnet",
    "at",
    "vid",
    "nst",
    "reviewkd",
    "ft",
)
NUM_DATA = 16


def built_term(name: str, center_scale: float = 1.0, epoch: int = 100):
    torch.manual_seed(0)  # the heads' initialization
    teacher_stages = TEACHER_STAGES_OF.get(name, TEACHER_STAGES)
    student, teacher = ShapeModel(STUDENT_STAGES, center_scale), ShapeModel(teacher_stages, center_scale)
    term = TERMS[name]()
    term.build(PairInfo(student, teacher, NUM_CLASSES, train_labels=torch.arange(NUM_DATA) % NUM_CLASSES))
    if term.warmup_epochs:  # a warm-up needs the epoch
        term.on_train_epoch_start(epoch)
    return term, student, teacher


def cast(out: ModelOutput, dtype: torch.dtype, requires_grad: bool) -> tuple[ModelOutput, list[torch.Tensor]]:
    """A copy of ``out`` in ``dtype`` whose tensors are leaves (so their gradients can be read)."""
    leaves = [
        t.detach().to(dtype).requires_grad_(requires_grad) for t in (*out.stages, out.pooled, out.logits)
    ]
    return ModelOutput(leaves[:-2], leaves[-2], leaves[-1]), leaves


def precision_context(precision: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision.endswith("autocast") else nullcontext()


def input_dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision == "bf16-autocast" else torch.float32


def evaluate(name, s_out, t_out, labels, precision, center_scale=1.0, indices=None, init_stage=False):
    """The term's value and the gradients of its sum w.r.t. the student's inputs and the term's heads.

    ``init_stage``: the value of ``init_loss`` instead, with every head trainable (as the InitStage
    callback runs it).
    """
    term, student, teacher = built_term(name, center_scale)
    if init_stage:
        term.requires_grad_(True)
    s_out, t_out = (o.value if isinstance(o, Drawn) else o for o in (s_out, t_out))
    dtype = input_dtype(precision)
    s_out, s_leaves = cast(s_out, dtype, requires_grad=True)
    t_out, _ = cast(t_out, dtype, requires_grad=False)  # the teacher runs under no_grad
    ctx = DistillContext(
        student=s_out,
        teacher=t_out,
        labels=labels,
        student_model=student,
        teacher_model=teacher,
        indices=torch.arange(len(labels)) if indices is None else indices,
    )
    with precision_context(precision):
        value = term.init_loss(ctx) if init_stage else term(ctx)
    params = [p for p in (*term.parameters(), *student.parameters()) if p.requires_grad]
    if not value.requires_grad:  # a constant (AB and FSP add nothing to the main training)
        return value, []
    grads = torch.autograd.grad(value.sum(), s_leaves + params, allow_unused=True)
    return value, [g for g in grads if g is not None]


def assert_finite(value: torch.Tensor, grads: list[torch.Tensor], what: str) -> None:
    assert torch.isfinite(value).all(), f"{what}: non-finite value {value}"
    for g in grads:
        assert torch.isfinite(g).all(), f"{what}: non-finite gradient (max |g| {g.abs().max()})"


# -- every term: finite value and gradients -------------------------------------------------------------


@pytest.mark.parametrize("name", TERMS)
@SETTINGS
@given(
    s_out=model_outputs(STUDENT_STAGES),
    t_out=model_outputs(TEACHER_STAGES),
    labels=labels_st,
    center_exp=st.sampled_from([-6, 0, 4]),
)
def test_every_term_is_finite_with_finite_gradients(name, s_out, t_out, labels, center_exp):
    """In float32, under bf16 autocast (float32 and bf16 inputs); the value is float32 in every case."""
    per_sample = TERMS[name]().per_sample
    for precision in PRECISIONS:
        value, grads = evaluate(name, s_out, t_out, labels, precision, center_scale=10.0**center_exp)
        assert value.shape == ((B,) if per_sample else ())
        assert value.dtype == torch.float32, f"{name} ({precision}): losses are computed in float32"
        assert_finite(value, grads, f"{name} ({precision})")


INIT_STAGE_TERMS = [name for name, make in TERMS.items() if isinstance(make(), InitStageTerm)]


@pytest.mark.parametrize("name", INIT_STAGE_TERMS)
@SETTINGS
@given(s_out=model_outputs(STUDENT_STAGES), t_out=model_outputs(TEACHER_STAGES), labels=labels_st)
def test_every_init_stage_loss_is_finite_with_finite_gradients(name, s_out, t_out, labels):
    """The loss the InitStage callback minimizes (AB, FSP, FT), in every precision."""
    if name in TEACHER_STAGES_OF:  # the teacher's maps must have the shapes the term was built for
        t_out = s_out
    for precision in PRECISIONS:
        value, grads = evaluate(name, s_out, t_out, labels, precision, init_stage=True)
        assert value.shape == () and value.dtype == torch.float32, f"{name} ({precision})"
        assert value.item() >= 0
        assert_finite(value, grads, f"{name} init stage ({precision})")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", TERMS)
def test_every_term_is_finite_on_all_zero_features(name, precision):
    """Dead features (all zero: stage maps, pooled features, logits) for both models at once."""
    zeros_s = ModelOutput(
        [torch.zeros(B, *s) for s in STUDENT_STAGES], torch.zeros(B, DIM), torch.zeros(B, 5)
    )
    zeros_t = ModelOutput(
        [torch.zeros(B, *s) for s in TEACHER_STAGES], torch.zeros(B, DIM), torch.zeros(B, 5)
    )
    value, grads = evaluate(name, zeros_s, zeros_t, torch.tensor([0, 1, 0, 2]), precision)
    assert_finite(value, grads, f"{name} ({precision})")


BATCH_OF_ONE_UNDEFINED = {
    "cc": "correlation over consecutive samples needs two",
    "feature_align": "BatchNorm1d in training mode needs two samples",
    "reviewkd": "BatchNorm of the 1x1 level in training mode needs two samples",
}


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("name", TERMS)
@settings(SETTINGS, max_examples=4)
@given(data=st.data())
def test_small_batches_stay_finite(name, batch, data):
    """The last training batch of an epoch may hold one or two images (the loaders keep it)."""
    if batch == 1 and name in BATCH_OF_ONE_UNDEFINED:
        pytest.skip(BATCH_OF_ONE_UNDEFINED[name])
    s_out = data.draw(model_outputs(STUDENT_STAGES, batch))
    t_out = data.draw(model_outputs(TEACHER_STAGES, batch))
    labels = data.draw(st.lists(st.integers(0, NUM_CLASSES - 1), min_size=batch, max_size=batch))
    value, grads = evaluate(name, s_out, t_out, torch.tensor(labels), "float32")
    assert_finite(value, grads, f"{name} (B={batch})")


# -- the functional layer: finite, float32, and the documented ranges -----------------------------------


def _leaf(x: torch.Tensor, precision: str) -> torch.Tensor:
    return x.detach().to(input_dtype(precision)).requires_grad_(True)


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(zs=logits(), zt=logits(), labels=labels_st, temperature=st.sampled_from([0.5, 1.0, 4.0, 10.0]))
def test_logit_losses_are_finite_and_non_negative(precision, zs, zt, labels, temperature):
    s, t = _leaf(zs, precision), _leaf(zt, precision)
    with precision_context(precision):
        values = {
            "kd": LF.kd(s, t, temperature),
            "dkd": dkd(s, t, labels, 1.0, 8.0, temperature),
        }
    for name, value in values.items():
        grads = torch.autograd.grad(value.sum(), [s, t], retain_graph=True, allow_unused=True)
        assert value.dtype == torch.float32
        assert_finite(value, [g for g in grads if g is not None], name)
        # KL divergences: non-negative up to rounding (relative to the logits' scale)
        tol = 1e-5 * temperature * (1 + max(zs.abs().max().item(), zt.abs().max().item()))
        assert value.min().item() >= -tol, name


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(z=logits(), labels=labels_st, temperature=st.sampled_from([1.0, 4.0]))
def test_kd_and_dkd_vanish_for_identical_logits(precision, z, labels, temperature):
    s = _leaf(z, precision)
    with precision_context(precision):
        assert torch.equal(LF.kd(s, s.detach(), temperature), torch.zeros(B))
        assert torch.equal(dkd(s, s.detach(), labels, 1.0, 8.0, temperature), torch.zeros(B))


@SETTINGS
@given(
    zs=logits(),
    zt=logits(),
    shift_s=st.floats(-100, 100),
    shift_t=st.floats(-100, 100),
    labels=labels_st,
)
def test_logit_losses_ignore_a_constant_added_to_the_logits(zs, zt, shift_s, shift_t, labels):
    # moderate logits, so that the shift does not change float32 rounding much
    zs, zt = zs.clamp(-50, 50), zt.clamp(-50, 50)
    for fn in (LF.kd, partial(dkd, labels=labels)):
        base, shifted = fn(zs, zt), fn(zs + shift_s, zt + shift_t)
        torch.testing.assert_close(shifted, base, atol=2e-3, rtol=1e-3)


@st.composite
def anchors(draw, n: int = B) -> torch.Tensor:
    """Similarity-to-center anchors: unit features times centers of norm 1e-6 .. 1e4, [N, C]."""
    return draw(features((n, NUM_CLASSES), kinds=("gauss", "zeros", "const", "onehot")))


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(sim_s=anchors(), sim_t=anchors(), labels=labels_st, temperature=st.sampled_from([0.07, 1.0, 4.0]))
def test_category_contrast_is_finite_float32_and_non_negative(precision, sim_s, sim_t, labels, temperature):
    s, t = _leaf(sim_s, precision), _leaf(sim_t, precision)
    with precision_context(precision):
        value = LF.category_contrast(s, t, labels, temperature, 0.07)
    grads = torch.autograd.grad(value.sum(), [s, t])
    assert value.dtype == torch.float32 and value.shape == (B,)
    assert_finite(value, list(grads), "category_contrast")
    assert value.min().item() >= -1e-4 * (1 + value.abs().max().item())


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(sim_s=anchors(), sim_t=anchors(), labels=labels_st, perm=st.permutations(range(B)))
def test_category_contrast_follows_a_consistent_permutation_of_the_samples(
    precision, sim_s, sim_t, labels, perm
):
    perm = torch.tensor(perm)
    with precision_context(precision):
        base = LF.category_contrast(sim_s, sim_t, labels)
        permuted = LF.category_contrast(sim_s[perm], sim_t[perm], labels[perm])
    torch.testing.assert_close(permuted, base[perm], rtol=1e-4, atol=1e-3)


def test_category_contrast_under_autocast_matches_float32():
    """The anchor products must not run in bfloat16: the loss is a difference of large logits."""
    g = torch.Generator().manual_seed(0)
    sim_s, sim_t = 3 * torch.randn(8, NUM_CLASSES, generator=g), 3 * torch.randn(8, NUM_CLASSES, generator=g)
    labels = torch.arange(8) % 3
    exact = LF.category_contrast(sim_s, sim_t, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = LF.category_contrast(sim_s, sim_t, labels)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, exact, rtol=1e-5, atol=1e-5)


def test_category_contrast_runs_its_heads_in_float32_under_autocast():
    """float32 features under bf16 autocast: the float32 value and gradients, the heads' included."""
    name = "category_contrast"
    g = torch.Generator().manual_seed(0)

    def outputs(stages: list[tuple[int, int, int]]) -> ModelOutput:
        return ModelOutput(
            [torch.randn(B, *shape, generator=g) for shape in stages],
            torch.randn(B, DIM, generator=g),
            torch.randn(B, NUM_CLASSES, generator=g),
        )

    s_out, t_out, labels = outputs(STUDENT_STAGES), outputs(TEACHER_STAGES), torch.arange(B) % 2
    exact, exact_grads = evaluate(name, s_out, t_out, labels, "float32")
    value, grads = evaluate(name, s_out, t_out, labels, "float32-autocast")
    torch.testing.assert_close(value, exact, rtol=1e-6, atol=1e-6)
    assert len(grads) == len(exact_grads) > 1
    for got, want in zip(grads, exact_grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(
    u=features((B, DIM)),
    h=features((B, DIM)),
    scale_u=st.floats(-3, 3).map(lambda e: 10.0**e),
    scale_h=st.floats(-3, 3).map(lambda e: 10.0**e),
)
def test_feature_align_is_finite_bounded_and_scale_invariant(precision, u, h, scale_u, scale_h):
    uu, hh = _leaf(u, precision), _leaf(h, precision)
    with precision_context(precision):
        value = LF.feature_align(uu, hh)
    grads = torch.autograd.grad(value, [uu, hh])
    assert value.dtype == torch.float32
    assert_finite(value, list(grads), "feature_align")
    assert -1e-5 <= value.item() <= 4 + 1e-5  # 2 − 2·cos
    # invariant to a positive scaling of either input, as long as no sample falls under the eps of
    # F.normalize (1e-12): the drawn norms are >= 1e-6 and the scales >= 1e-3
    torch.testing.assert_close(
        LF.feature_align(u * scale_u, h * scale_h), LF.feature_align(u, h), atol=1e-5, rtol=1e-5
    )
    nonzero = u.flatten(1).norm(dim=1) > 0
    if nonzero.all():
        assert LF.feature_align(u, u).item() == pytest.approx(0.0, abs=1e-5)


def test_feature_align_of_all_zero_features_is_finite():
    zeros = torch.zeros(B, DIM, requires_grad=True)
    h = torch.randn(B, DIM)
    for a, b in ((zeros, h), (h.clone().requires_grad_(True), torch.zeros(B, DIM))):
        value = LF.feature_align(a, b)
        (grad,) = torch.autograd.grad(value, [a])
        assert value.item() == pytest.approx(2.0)  # cosine 0 with a zero vector
        assert torch.isfinite(grad).all()


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(
    w_s=features((NUM_CLASSES, DIM + 1)),
    w_t=features((NUM_CLASSES, DIM + 1)),
)
def test_center_align_is_finite_non_negative_and_zero_for_equal_centers(precision, w_s, w_t):
    student, teacher = nn.Linear(DIM, NUM_CLASSES), nn.Linear(DIM, NUM_CLASSES)
    with torch.no_grad():
        for layer, w in ((student, w_s), (teacher, w_t)):
            layer.weight.copy_(w[:, :DIM])
            layer.bias.copy_(w[:, DIM])
    if precision == "bf16-autocast":
        student, teacher = student.bfloat16(), teacher.bfloat16()
    with precision_context(precision):
        value = LF.center_align(student, teacher)
        zero = LF.center_align(student, student)
    grads = torch.autograd.grad(value, list(student.parameters()))
    assert value.dtype == torch.float32
    assert_finite(value, list(grads), "center_align")
    assert value.item() >= 0 and zero.item() == 0.0


ce_values = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)


@SETTINGS
@given(
    ce=st.lists(ce_values, min_size=1, max_size=64),
    epoch=st.integers(1, 2000),
    base=st.sampled_from([1.0, 1.005, 1.05]),
    global_mean=st.one_of(st.none(), st.floats(0.0, 1e4)),
    factor=st.floats(1e-3, 1e3),
)
def test_preview_weights_are_in_zero_one_and_scale_free(ce, epoch, base, global_mean, factor):
    ce = torch.tensor(ce)
    mean = None if global_mean is None else torch.tensor(global_mean)
    w = LF.preview_weights(ce, epoch, base, batch_mean=mean)
    assert w.shape == ce.shape and not w.requires_grad
    assert torch.isfinite(w).all()
    assert (w > 0).all() and (w <= 1).all(), f"weights {w} leave (0, 1]"
    gamma = LF.preview_difficulty(ce, mean)
    easy = gamma <= LF.preview_threshold(epoch, base)
    assert (w[easy] == 1).all()
    # harder images never weigh more than easier ones
    order = torch.argsort(gamma)
    assert (w[order][1:] <= w[order][:-1]).all()
    if global_mean is None:  # γ = c / mean(c) does not depend on the unit of c
        rescaled = LF.preview_weights(ce * factor, epoch, base)
        # (away from the threshold, where rounding may move γ to the other side)
        clear = (gamma - LF.preview_threshold(epoch, base)).abs() > 1e-4
        torch.testing.assert_close(rescaled[clear], w[clear], atol=1e-5, rtol=1e-4)


def test_preview_weights_of_a_dominant_hard_image_stay_positive():
    """One image with all the loss in a batch of 64 has γ = 64; exp(−64²) underflows float32."""
    ce = torch.tensor([50.0] + [0.0] * 63)
    w = LF.preview_weights(ce, epoch=1)
    assert w[0] > 0 and (w[1:] == 1).all()
    assert (LF.preview_weights(torch.tensor([1.0, 2.0]), 1, batch_mean=torch.tensor(1e-3)) > 0).all()


# -- the baselines' formulas ----------------------------------------------------------------------------

MAP = (B, 4, 4, 4)


@pytest.mark.parametrize("precision", PRECISIONS)
@SETTINGS
@given(fs=features(MAP), p=st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]))
def test_attention_maps_are_unit_or_zero_and_finite(precision, fs, p):
    f = _leaf(fs, precision)
    with precision_context(precision):
        a = attention_map(f, p)
    (grad,) = torch.autograd.grad(a.square().sum(), [f])
    assert a.dtype == torch.float32 and torch.isfinite(a).all() and torch.isfinite(grad).all()
    assert (a >= 0).all(), "attention is a mean of |f|^p"
    assert (a.norm(dim=1) <= 1 + 1e-4).all()


@st.composite
def scaled_pair(draw, shape):
    """Features, a positive scale and a batch permutation, for the invariance checks."""
    f = draw(features(shape, kinds=("gauss", "relu", "onehot")))
    g = draw(features(shape, kinds=("gauss", "relu", "onehot")))
    scale = 10.0 ** draw(st.floats(-2, 2))
    perm = torch.tensor(draw(st.permutations(range(shape[0]))))
    return f, g, scale, perm


def _clip_norms(f: torch.Tensor, low: float = 1e-3, high: float = 1e3) -> torch.Tensor:
    """Keep per-sample norms in [low, high]: the scale invariances hold away from the eps of each formula."""
    n = f.flatten(1).norm(dim=1).view(-1, *([1] * (f.ndim - 1)))
    return f * (n.clamp(low, high) / n.clamp(min=1e-30))


@SETTINGS
@given(pair=scaled_pair(MAP))
def test_relational_and_map_losses_vanish_on_identical_inputs_and_ignore_scale(pair):
    f, g, scale, perm = pair
    f, g = _clip_norms(f), _clip_norms(g)
    at_term, nst_term = ATTerm(), NSTTerm()
    flat_f, flat_g = f.flatten(1), g.flatten(1)
    # zero for identical inputs
    assert similarity_preserving(f, f).item() == 0.0
    assert pkt(flat_f, flat_f).item() == 0.0
    assert rkd(flat_f, flat_f).item() == 0.0
    assert torch.equal(hcl(f, f), torch.zeros(B))
    assert torch.equal(attention_map(f, 2) - attention_map(f, 2), torch.zeros(B, 16))
    torch.testing.assert_close(nst(f, f), torch.zeros(B), atol=1e-5, rtol=0)
    # invariant to a positive rescaling of the student's features (cosines, normalized maps/distances)
    for fn in (similarity_preserving, pkt, rkd):
        a, b = (flat_f, flat_g) if fn is not similarity_preserving else (f, g)
        torch.testing.assert_close(fn(a * scale, b), fn(a, b), rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(nst(f * scale, g), nst(f, g), rtol=1e-3, atol=1e-5)
    ctx = _map_context(f, g)
    torch.testing.assert_close(at_term(_map_context(f * scale, g)), at_term(ctx), rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(nst_term(_map_context(f * scale, g)), nst_term(ctx), rtol=1e-3, atol=1e-5)
    # batch-relational losses ignore the order of the batch; per-sample ones follow it
    for fn in (similarity_preserving, pkt, rkd):
        a, b = (flat_f, flat_g) if fn is not similarity_preserving else (f, g)
        torch.testing.assert_close(fn(a[perm], b[perm]), fn(a, b), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(at_term(_map_context(f[perm], g[perm])), at_term(ctx)[perm])
    torch.testing.assert_close(hcl(f[perm], g[perm]), hcl(f, g)[perm])


def _map_context(fs: torch.Tensor, ft: torch.Tensor) -> DistillContext:
    return DistillContext(
        student=ModelOutput([None, fs], None, None),
        teacher=ModelOutput([None, ft], None, None),
        labels=torch.zeros(fs.shape[0], dtype=torch.long),
        student_model=None,
        teacher_model=None,
    )


@pytest.mark.parametrize("name", PER_SAMPLE_EQUIVARIANT)
@settings(SETTINGS, max_examples=6)
@given(
    s_out=model_outputs(STUDENT_STAGES),
    t_out=model_outputs(TEACHER_STAGES),
    labels=labels_st,
    perm=st.permutations(range(B)),
)
def test_per_sample_terms_follow_a_permutation_of_the_batch(name, s_out, t_out, labels, perm):
    perm = torch.tensor(perm)

    def permuted(out: Drawn) -> ModelOutput:
        out = out.value
        return ModelOutput([s[perm] for s in out.stages], out.pooled[perm], out.logits[perm])

    base, _ = evaluate(name, s_out, t_out, labels, "float32")
    moved, _ = evaluate(name, permuted(s_out), permuted(t_out), labels[perm], "float32")
    scale = 1 + base.abs().max().item()
    torch.testing.assert_close(moved, base[perm], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", BATCH_INVARIANT)
@settings(SETTINGS, max_examples=6)
@given(
    s_out=model_outputs(STUDENT_STAGES), t_out=model_outputs(TEACHER_STAGES), perm=st.permutations(range(B))
)
def test_batch_terms_ignore_the_order_of_the_batch(name, s_out, t_out, perm):
    perm = torch.tensor(perm)

    def permuted(out: Drawn) -> ModelOutput:
        out = out.value
        return ModelOutput([s[perm] for s in out.stages], out.pooled[perm], out.logits[perm])

    labels = torch.zeros(B, dtype=torch.long)
    base, _ = evaluate(name, s_out, t_out, labels, "float32")
    moved, _ = evaluate(name, permuted(s_out), permuted(t_out), labels, "float32")
    torch.testing.assert_close(moved, base, rtol=1e-4, atol=1e-5 * (1 + base.abs().item()))


@SETTINGS
@given(e_s=features((B, DIM)), e_t=features((B, DIM)))
def test_correlation_congruence_is_finite_and_reverses(e_s, e_t):
    s = e_s.clone().requires_grad_(True)
    value = correlation_congruence(s, e_t)
    (grad,) = torch.autograd.grad(value, [s])
    assert_finite(value, [grad], "cc")
    assert value.item() >= 0 and correlation_congruence(e_s, e_s).item() == 0.0
    # consecutive pairs are the same pairs read backwards
    torch.testing.assert_close(correlation_congruence(e_s.flip(0), e_t.flip(0)), value.detach())


@SETTINGS
@given(
    cos=st.lists(st.floats(-1, 1), min_size=B * 9, max_size=B * 9),
    nce_t=st.sampled_from([0.02, 0.07, 1.0]),
    num_data=st.sampled_from([16, 50_000]),
)
def test_nce_loss_is_finite_for_every_score_the_memory_bank_can_give(cos, nce_t, num_data):
    """Scores are exp(cos / nce_t) / Z with |cos| <= 1; Z as the first batch fixes it (mean · N)."""
    raw = torch.exp(torch.tensor(cos).view(B, 9) / nce_t)
    scores = raw / (raw.mean() * num_data)
    loss = nce_loss(scores, num_data)
    assert torch.isfinite(loss).all() and (loss >= 0).all()


@SETTINGS
@given(data=st.data())
def test_crd_keeps_unit_memory_and_finite_normalizers(data):
    """After steps on extreme pooled features the banks stay unit-norm and Z stays finite and positive."""
    term, student, teacher = built_term("crd")
    for step in range(3):
        s_out = data.draw(model_outputs(STUDENT_STAGES)).value
        t_out = data.draw(model_outputs(TEACHER_STAGES)).value
        indices = torch.tensor(
            data.draw(st.lists(st.integers(0, NUM_DATA - 1), min_size=B, max_size=B, unique=True))
        )
        ctx = DistillContext(s_out, t_out, indices % NUM_CLASSES, student, teacher, indices=indices)
        value = term(ctx)
        assert torch.isfinite(value).all(), f"step {step}"
    written = term.memory_student.norm(dim=1)
    assert torch.isfinite(term.memory_student).all() and torch.isfinite(term.memory_teacher).all()
    assert torch.isfinite(term.normalizers).all() and (term.normalizers > 0).all()
    assert ((written - 1).abs() < 1e-4).sum() >= B  # at least the entries written are unit vectors


def test_vid_variance_stays_positive_for_extreme_log_scales():
    term, _, _ = built_term("vid")
    for head in term.heads:
        with torch.no_grad():
            head.log_scale.copy_(torch.linspace(-1e4, 1e4, head.log_scale.numel()))
        var = head.variance()
        assert (var >= term.eps).all() and torch.isfinite(var).all()
        assert math.isfinite(var.log().sum().item())
