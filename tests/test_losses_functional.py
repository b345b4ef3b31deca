"""The functional layer against deliberately plain float64 re-computations (explicit loops)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import functional as LF


def plain_kd(zs: torch.Tensor, zt: torch.Tensor, t: float) -> list[float]:
    out = []
    for s_row, t_row in zip(zs.tolist(), zt.tolist(), strict=True):
        zs_t = [v / t for v in s_row]
        zt_t = [v / t for v in t_row]
        norm_s = math.log(sum(math.exp(v) for v in zs_t))
        norm_t = math.log(sum(math.exp(v) for v in zt_t))
        kl = sum(
            math.exp(b - norm_t) * ((b - norm_t) - (a - norm_s)) for a, b in zip(zs_t, zt_t, strict=True)
        )
        out.append(t * t * kl)
    return out


def plain_category_contrast(a_s, a_t, labels, tau, tau_base) -> list[float]:
    anchors = a_s.tolist() + a_t.tolist()
    lab = labels.tolist() * 2
    n2 = len(anchors)

    def s(k, m):
        return sum(x * y for x, y in zip(anchors[k], anchors[m], strict=True)) / tau

    per_anchor = []
    for k in range(n2):
        log_den = math.log(sum(math.exp(s(k, m)) for m in range(n2) if m != k))
        pos = [m for m in range(n2) if m != k and lab[m] == lab[k]]
        mean = sum(s(k, m) - log_den for m in pos) / len(pos) if pos else 0.0
        per_anchor.append(-(tau / tau_base) * mean)
    n = len(lab) // 2
    return [per_anchor[j] + per_anchor[j + n] for j in range(n)]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_plain_computation(temperature):
    g = torch.Generator().manual_seed(0)
    zs, zt = (
        torch.randn(5, 7, generator=g, dtype=torch.float64),
        torch.randn(5, 7, generator=g, dtype=torch.float64),
    )
    got = LF.kd(zs, zt, temperature)
    assert got.shape == (5,)
    assert got.tolist() == pytest.approx(plain_kd(zs, zt, temperature), rel=1e-5)
    assert torch.allclose(LF.kd(zt, zt, temperature), torch.zeros(5, dtype=torch.float32), atol=1e-6)


@pytest.mark.parametrize(
    "labels",
    [
        [0, 1, 2, 0, 1, 2, 3, 3],  # several classes
        [0, 0, 0, 0, 0, 0, 0, 0],  # all samples of one class
        [0, 1, 1, 1, 2, 2, 2, 2],  # class 0 has a single view-sample
    ],
)
def test_category_contrast_matches_plain_computation(labels):
    g = torch.Generator().manual_seed(1)
    n, c = len(labels), 5
    a_s = torch.randn(n, c, generator=g, dtype=torch.float64)
    a_t = torch.randn(n, c, generator=g, dtype=torch.float64)
    y = torch.tensor(labels)
    got = LF.category_contrast(a_s, a_t, y, temperature=4.0, base_temperature=0.07)
    assert got.shape == (n,)
    assert got.tolist() == pytest.approx(plain_category_contrast(a_s, a_t, y, 4.0, 0.07), rel=1e-4, abs=1e-4)


def test_category_contrast_is_finite_for_extreme_similarities():
    a_s = torch.tensor([[1e4, -1e4], [-1e4, 1e4], [1e4, 1e4]], requires_grad=True)
    a_t = torch.tensor([[3e4, 0.0], [0.0, -3e4], [-1e4, 1e4]], requires_grad=True)
    loss = LF.category_contrast(a_s, a_t, torch.tensor([0, 1, 0]))
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    assert torch.isfinite(a_s.grad).all() and torch.isfinite(a_t.grad).all()


def test_kd_is_finite_for_extreme_logits():
    zs = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    zt = torch.tensor([[-1e4, 1e4, 0.0]])
    loss = LF.kd(zs, zt)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(zs.grad).all()


def test_center_align_is_mse_of_weight_and_bias():
    g = torch.Generator().manual_seed(2)
    s, t = nn.Linear(4, 3), nn.Linear(4, 3)
    with torch.no_grad():
        for p in (*s.parameters(), *t.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    expected = sum(
        (s.weight[i, j].item() - t.weight[i, j].item()) ** 2 for i in range(3) for j in range(4)
    ) + sum((s.bias[i].item() - t.bias[i].item()) ** 2 for i in range(3))
    assert LF.center_align(s, t).item() == pytest.approx(expected / 15, rel=1e-5)


def test_center_align_rejects_different_shapes():
    with pytest.raises(ConfigError, match="d_s == d_t"):
        LF.center_align(nn.Linear(4, 3), nn.Linear(8, 3))


def test_feature_align_is_two_minus_twice_mean_cosine():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    h = torch.tensor([[2.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    cosines = [1.0, -1.0, 1 / math.sqrt(2)]
    assert LF.feature_align(u, h).item() == pytest.approx(2 - 2 * sum(cosines) / 3, rel=1e-6)
    assert LF.feature_align(h, h).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("epoch", "expected"), [(1, 1.005), (150, 2.113), (240, 3.310)])
def test_preview_threshold_schedule(epoch, expected):
    assert LF.preview_threshold(epoch) == pytest.approx(expected, abs=5e-4)


def test_preview_threshold_is_one_indexed():
    with pytest.raises(ValueError, match="1-indexed"):
        LF.preview_threshold(0)


def test_preview_weights_below_and_above_threshold():
    ce = torch.tensor([0.5, 1.0, 1.5, 5.0], requires_grad=True)  # mean 2.0
    gamma = [0.25, 0.5, 0.75, 2.5]
    w = LF.preview_weights(ce, epoch=1)
    expected = [1.0 if g <= 1.005 else math.exp(-g * g) for g in gamma]
    assert w.tolist() == pytest.approx(expected, rel=1e-6)
    assert not w.requires_grad
    assert ((w > 0) & (w <= 1)).all()
    # at a late epoch the threshold (3.31) covers the hard sample too
    assert LF.preview_weights(ce, epoch=240).tolist() == [1.0, 1.0, 1.0, 1.0]


def test_preview_weights_with_zero_loss_batch_are_ones():
    assert LF.preview_weights(torch.zeros(3), epoch=1).tolist() == [1.0, 1.0, 1.0]


def test_category_contrast_over_a_wider_contrast_set_matches_the_full_computation():
    """Rows offset..offset+n of a larger set, contrasted against all of it, give the full loss's rows."""
    g = torch.Generator().manual_seed(3)
    a_s, a_t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3])
    full = LF.category_contrast(a_s, a_t, y)
    for offset in (0, 4):
        part = LF.category_contrast(
            a_s[offset : offset + 4],
            a_t[offset : offset + 4],
            y[offset : offset + 4],
            contrast=(a_s, a_t, y),
            offset=offset,
        )
        assert torch.allclose(part, full[offset : offset + 4], atol=1e-5)
