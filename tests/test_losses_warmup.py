"""The linear warm-up every loss term takes (``warmup_epochs``): option, refusals and values by epoch."""

from __future__ import annotations

import inspect

import pytest
import torch
from omegaconf import open_dict

from helpers import METHODS, compose_config
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import terms as term_classes
from pckd_lightning.losses.context import DistillContext
from pckd_lightning.losses.terms import CrossEntropyTerm, DKDTerm, KDTerm, LossTerm, PairInfo
from pckd_lightning.losses.terms.base import InitStageTerm
from pckd_lightning.models import ModelOutput, create_model
from pckd_lightning.run.build import build_terms

NUM_CLASSES, NUM_DATA, IMAGES, SIZE = 10, 64, 4, 16
#: the term classes a config can name (the abstract bases left out)
CLASSES = [
    getattr(term_classes, name)
    for name in term_classes.__all__
    if isinstance(getattr(term_classes, name), type)
    and issubclass(getattr(term_classes, name), LossTerm)
    and getattr(term_classes, name) not in (LossTerm, InitStageTerm)
]
PUBLISHED_WARMUP = {"DKDTerm": 20, "ReviewKDTerm": 20}  # mdistiller's CIFAR-100 configs


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_term_takes_warmup_epochs_with_its_published_default(cls):
    option = inspect.signature(cls).parameters["warmup_epochs"]
    assert option.default == PUBLISHED_WARMUP.get(cls.__name__, 0)
    assert cls(warmup_epochs=3).warmup_epochs == 3


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True, None])
@pytest.mark.parametrize("cls", [KDTerm, CrossEntropyTerm, DKDTerm], ids=lambda c: c.__name__)
def test_a_bad_warmup_is_refused_with_the_valid_range(cls, bad):
    with pytest.raises(ConfigError, match=r"warmup_epochs must be an int >= 0.*got"):
        cls(warmup_epochs=bad)


def test_the_factor_is_not_saved_in_checkpoints():
    term = KDTerm(warmup_epochs=5)
    term.on_train_epoch_start(2)
    assert "_warmup" not in term.state_dict()


def test_a_warm_up_needs_the_epoch_and_names_the_hook():
    z = torch.randn(2, 3)
    ctx = DistillContext(_logits_only(z), _logits_only(z + 1), torch.tensor([0, 1]), None, None)
    with pytest.raises(RuntimeError, match="on_train_epoch_start"):
        KDTerm(warmup_epochs=2).weighted(torch.ones(()))
    assert KDTerm().weighted(KDTerm()(ctx)).shape == (2,)  # no warm-up, no epoch needed


def _logits_only(z: torch.Tensor) -> ModelOutput:
    return ModelOutput(stages=[], pooled=z, logits=z)


def _built_terms(method: str, warmup: int, pair: PairInfo) -> dict[str, LossTerm]:
    """The method's terms from its config, each with ``warmup_epochs=warmup``, heads seeded alike."""
    cfg = compose_config([f"distill={method}"])
    with open_dict(cfg):
        for term_cfg in cfg.distill.terms.values():
            if term_cfg is None:
                continue
            term_cfg.warmup_epochs = warmup
            if "num_data" in term_cfg and term_cfg.num_data is None:
                term_cfg.num_data = NUM_DATA  # the runner's job: the training-set size
    terms = build_terms(cfg.distill)
    torch.manual_seed(0)
    for term in terms.values():
        term.build(pair)
        if isinstance(term, InitStageTerm):
            term.mark_initialized()  # as the InitStage callback does
    return {name: term for name, term in terms.items() if not term.skip_reason}


@pytest.mark.parametrize("method", METHODS)
def test_every_term_of_every_method_ramps_linearly_by_epoch(method, one_thread):
    """warmup_epochs=4: the share of the total is (e/4)·(the share without warm-up) in epochs 1-3, equal from
    epoch 4; the term's value itself is the same."""
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", NUM_CLASSES), create_model("resnet14", NUM_CLASSES)
    pair = PairInfo(student, teacher, NUM_CLASSES, train_labels=torch.arange(NUM_DATA) % NUM_CLASSES)
    warm, plain = _built_terms(method, 4, pair), _built_terms(method, 0, pair)
    views = compose_config([f"distill={method}"]).distill.views
    x = torch.randn(IMAGES * views, 3, SIZE, SIZE)
    ctx = DistillContext(
        student=student(x, with_features=True),
        teacher=teacher(x, with_features=True),
        labels=torch.arange(IMAGES).repeat_interleave(views),
        student_model=student,
        teacher_model=teacher,
        num_views=views,
        indices=torch.arange(IMAGES),
    )
    covered = set()
    for epoch, factor in ((1, 0.25), (2, 0.5), (3, 0.75), (4, 1.0), (9, 1.0)):
        for name in warm:
            warm[name].on_train_epoch_start(epoch)
            plain[name].on_train_epoch_start(epoch)
            term_ctx = ctx if warm[name].views == "all" else ctx.first_view()
            torch.manual_seed(epoch)  # terms that sample (CRD's negatives) draw the same
            raw = warm[name](term_ctx).detach()
            torch.manual_seed(epoch)
            value = plain[name](term_ctx).detach()
            # the term's own value, as logged, carries neither weight nor warm-up; its share of the total does
            assert torch.allclose(raw, value, rtol=1e-5, atol=1e-7), (method, name, epoch)
            got, expected = warm[name].weighted(raw), factor * plain[name].weighted(value)
            assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7), (method, name, epoch)
            assert warm[name].effective_weight == pytest.approx(factor * plain[name].weight)
            covered.add(type(warm[name]))
    assert covered


def test_the_configs_cover_every_term_class():
    """So that the test above exercises the warm-up of every term there is."""
    used = set()
    for method in METHODS:
        for term_cfg in compose_config([f"distill={method}"]).distill.terms.values():
            if term_cfg is not None:
                used.add(term_cfg._target_.rsplit(".", 1)[-1])
    assert {c.__name__ for c in CLASSES} <= used
