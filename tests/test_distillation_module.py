"""DistillationModule: frozen teacher, trainable heads, preview weighting, vectorized step."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from helpers import METHODS, method_module
from pckd_lightning.distillation import Performance
from pckd_lightning.errors import ConfigError
from pckd_lightning.losses import (
    CrossEntropyTerm,
    KDTerm,
)
from pckd_lightning.losses import functional as LF
from pckd_lightning.preview import PreviewWeights
from tiny_module import NUM_CLASSES, make_module, pckd_terms, quiet_trainer


def batch(num_images=4, views=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, views, 3, size, size, generator=g)
    y = torch.arange(num_images) % NUM_CLASSES
    return x, y, torch.arange(num_images)


def total_loss(module, b):
    losses = module.step.losses(module.step.context(b))
    return module.step.total(losses), losses


def test_a_few_steps_lower_the_loss_and_leave_the_teacher_untouched():
    module = make_module()
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    optimizer = module.configure_optimizers()["optimizer"]
    b = batch()
    module.train()
    first = None
    for _ in range(8):
        optimizer.zero_grad()
        loss, _ = total_loss(module, b)
        first = first if first is not None else loss.item()
        loss.backward()
        assert all(p.grad is None for p in module.teacher.parameters())
        optimizer.step()
    assert loss.item() < first
    assert not module.teacher.training
    for k, v in module.teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k


def test_heads_get_gradients_and_are_optimized_but_the_teacher_is_not():
    module = make_module()
    loss, _ = total_loss(module, batch())
    loss.backward()
    heads = module.terms["category_contrast"], module.terms["feature_align"]
    for head in heads:
        for name, p in head.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert module.teacher.classifier_layer.weight.grad is None
    optimized = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert all(id(p) in optimized for h in heads for p in h.parameters())
    assert all(id(p) in optimized for p in module.student.parameters())
    assert not any(id(p) in optimized for p in module.teacher.parameters())


def test_teacher_stays_in_eval_mode_and_is_not_checkpointed():
    module = make_module()
    module.train()
    assert module.student.training and not module.teacher.training
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert not any(k.startswith("teacher.") for k in checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)  # the teacher comes back from the module itself
    assert set(checkpoint["state_dict"]) == set(module.state_dict())


def test_preview_weights_multiply_the_marked_terms_only():
    module = make_module()
    module.eval()  # deterministic BatchNorm, so both calls see identical features
    b = batch()
    weights = torch.tensor([1.0, 0.5, 0.25, 0.0])
    module.step.preview = lambda ce, record=True: weights
    ctx = module.step.context(b)
    weighted = module.step.losses(ctx)
    first = ctx.first_view()
    kd_plain = LF.kd(first.student.logits, first.teacher.logits)
    assert weighted["kd"].item() == pytest.approx((kd_plain * weights).mean().item(), rel=1e-5)
    cc = module.terms["category_contrast"](ctx)  # per view-sample, image-major
    assert weighted["category_contrast"].item() == pytest.approx(
        (cc * weights.repeat_interleave(4)).mean().item(), rel=1e-5
    )
    assert weighted["ce"].item() == pytest.approx(first.cross_entropy.mean().item(), rel=1e-5)


def test_views_are_flattened_image_major_and_ce_reads_view_zero():
    module = make_module()
    module.eval()
    x, y, idx = batch(num_images=3)
    ctx = module.step.context((x, y, idx))
    assert ctx.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    first = ctx.first_view()
    expected = module.student(x[:, 0])
    assert torch.allclose(first.student.logits, expected, atol=1e-5)


def test_center_align_is_skipped_when_feature_sizes_differ():
    module = make_module(student="resnet8", teacher="resnet8x4")
    assert "center_align" not in module.terms
    assert "d_s" in module.skipped_terms["center_align"] or "256" in module.skipped_terms["center_align"]


def test_zero_weight_terms_are_dropped():
    terms = pckd_terms()
    terms["kd"] = KDTerm(weight=0.0)
    assert "kd" not in make_module(terms=terms).terms


def test_training_from_scratch_needs_no_teacher():
    module = make_module(teacher=None, terms={"ce": CrossEntropyTerm()})
    loss, losses = total_loss(module, batch(views=1))
    assert set(losses) == {"ce"} and loss.requires_grad


def _python_calls(fn) -> int:
    calls = 0

    def tracer(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(tracer)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_step_has_no_python_loop_or_host_sync_per_sample(monkeypatch):
    module = make_module()

    def step(n):
        return lambda: total_loss(module, batch(num_images=n))[0].backward()

    step(2)()  # warm caches
    assert _python_calls(step(2)) == _python_calls(step(8))

    def no_sync(*_):
        raise AssertionError("host sync in the training step")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    monkeypatch.setattr(torch.Tensor, "tolist", no_sync)
    step(4)()


def test_the_module_schedules_its_preview_weights_per_epoch(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 4, 3, 16, 16, generator=g)
    y = torch.arange(8) % NUM_CLASSES
    data = DataLoader(TensorDataset(x, y, torch.arange(8)), batch_size=4)
    val = DataLoader(TensorDataset(x[:, 0], y, torch.arange(8)), batch_size=4)
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            seen.append(pl_module.step.preview.threshold)

    module = make_module(preview=PreviewWeights(base=1.5))
    trainer = quiet_trainer(tmp_path, [Record()], max_epochs=2)  # the module adds PreviewWeighting itself
    trainer.fit(module, train_dataloaders=data, val_dataloaders=val)
    assert seen == pytest.approx([1.5, 1.5, 2.25, 2.25])
    assert trainer.callback_metrics["preview/threshold"].item() == pytest.approx(2.25)
    hard = trainer.callback_metrics["preview/hard_fraction"].item()
    mean_weight = trainer.callback_metrics["preview/mean_weight"].item()
    assert 0.0 <= hard <= 1.0 and 0.0 < mean_weight <= 1.0


def test_preview_terms_without_preview_weights_are_refused_when_the_module_is_built():
    with pytest.raises(ConfigError, match=r"marked preview: true.*set distill.preview"):
        make_module(preview=None)


def test_the_steps_preview_terms_follow_the_terms_it_is_given():
    """The step reads the module's terms (setup's BatchNorm conversion, a benchmark's removed term)."""
    module = make_module()
    step = module.step
    marked = {name for name, term in step.terms.items() if term.preview}
    assert set(step.preview_terms) == marked and marked  # pckd_terms marks kd and category_contrast
    module.terms = torch.nn.ModuleDict({k: v for k, v in step.terms.items() if k not in marked})
    assert step.preview_terms == [] and step.terms is module.terms


def test_channels_last_gives_the_same_losses():
    plain, fast = make_module(), make_module(performance=Performance(channels_last=True))
    fast.setup("fit")
    for m in (plain, fast):
        m.eval()
    b = batch()
    a, c = total_loss(plain, b)[1], total_loss(fast, b)[1]
    assert fast.student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for name in a:
        assert torch.allclose(a[name], c[name], atol=1e-4), name


@pytest.mark.parametrize(("scale", "world", "expected"), [(True, 4, 0.2), (False, 4, 0.05), (True, 1, 0.05)])
def test_linear_lr_scaling_multiplies_the_lr_by_the_number_of_processes(scale, world, expected):
    module = make_module(lr_scaling="linear" if scale else "none")
    module.trainer = SimpleNamespace(world_size=world)  # a stand-in for a trainer with k processes
    optimizer = module.configure_optimizers()["optimizer"]
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([expected])


@pytest.mark.slow
def test_compiling_models_and_terms_gives_the_eager_losses_and_gradients(monkeypatch):
    eager, compiled = make_module(), make_module(performance=Performance(compile=True, compile_losses=True))
    compiled_in_place = []
    compile_in_place = torch.nn.Module.compile

    def recorded_compile(module, *args, **kwargs):
        compiled_in_place.append(module)
        return compile_in_place(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "compile", recorded_compile)
    compiled.setup("fit")
    assert all(any(t is c for c in compiled_in_place) for t in compiled.terms.values())
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints keep their names
    b = batch()
    results = []
    for module in (eager, compiled):
        total, losses = total_loss(module, b)
        total.backward()
        results.append((losses, {n: p.grad for n, p in module.named_parameters() if p.grad is not None}))
    (eager_losses, eager_grads), (compiled_losses, compiled_grads) = results
    for name, value in eager_losses.items():
        assert torch.allclose(value, compiled_losses[name], rtol=1e-4, atol=1e-5), name
    assert eager_grads.keys() == compiled_grads.keys()
    for name, grad in eager_grads.items():
        assert torch.allclose(grad, compiled_grads[name], rtol=1e-3, atol=1e-5), name


def test_logged_epoch_means_weight_each_step_by_its_images_and_the_bar_shows_the_running_mean(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, 16, 16, generator=g), torch.arange(10) % NUM_CLASSES
    data = DataLoader(TensorDataset(x, y, torch.arange(10)), batch_size=4)  # steps of 4, 4 and 2 images
    steps = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            # the step's own forward sees these weights and (train-mode) batch statistics
            with torch.no_grad():
                self.correct = (pl_module.student(batch[0]).argmax(1) == batch[1]).sum().item()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            steps.append((outputs["loss"].item(), len(batch[1]), self.correct))

    module = make_module(terms={"ce": CrossEntropyTerm()}, teacher=None)
    trainer = quiet_trainer(tmp_path, [Record()], max_epochs=1, log_every_n_steps=1)
    trainer.fit(module, train_dataloaders=data)
    assert [n for _, n, _ in steps] == [4, 4, 2]
    expected = sum(loss * n for loss, n, _ in steps) / 10
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(expected, rel=1e-5)
    assert trainer.callback_metrics["train/ce"].item() == pytest.approx(expected, rel=1e-5)
    # in percent, as val/top1 and the paper's tables
    assert trainer.callback_metrics["train/top1"].item() == pytest.approx(
        100 * sum(c for *_, c in steps) / 10
    )
    # the bar's loss is the running mean; after the last step, the epoch's mean
    assert trainer.progress_bar_metrics["loss"] == pytest.approx(expected, rel=1e-5)


def test_the_compile_mode_reaches_torch_compile_and_a_wrong_one_is_refused(monkeypatch):
    modes = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kwargs: modes.append(kwargs["mode"]))
    module = make_module(performance=Performance(compile_losses=True, compile_mode="reduce-overhead"))
    module.setup("fit")
    assert modes == ["reduce-overhead"] * len(module.terms)
    with pytest.raises(
        ConfigError, match=r"compile_mode='fast'.*valid values: None, default, reduce-overhead"
    ):
        Performance(compile_mode="fast")


@pytest.mark.parametrize("teacher_float32", [False, True])
def test_under_bf16_mixed_the_teacher_runs_in_bf16_unless_configured(tmp_path, teacher_float32):
    module = make_module(teacher_float32=teacher_float32)
    seen = []
    module.teacher.register_forward_hook(
        lambda m, args, out: seen.append((out.stages[-1].dtype, out.logits.dtype))
    )
    images, labels, indices = batch(num_images=8)
    loader = DataLoader(TensorDataset(images, labels, indices), batch_size=4)
    trainer = quiet_trainer(tmp_path, [], max_steps=2, precision="bf16-mixed", limit_val_batches=0)
    trainer.fit(module, loader)
    half = torch.float32 if teacher_float32 else torch.bfloat16
    assert seen == [(half, half)] * 2
    assert {m.weight.dtype for m in module.teacher.modules() if isinstance(m, torch.nn.Conv2d)} == {half}
    assert module.teacher.classifier_layer.weight.dtype == torch.float32  # the category centers
    assert torch.isfinite(trainer.logged_metrics["train/loss"])


def test_a_float32_teacher_under_a_half_precision_model_is_refused(tmp_path):
    module = make_module(teacher_float32=True)
    images, labels, indices = batch(num_images=4)
    loader = DataLoader(TensorDataset(images, labels, indices), batch_size=4)
    trainer = quiet_trainer(tmp_path, [], max_steps=1, precision="bf16-true")
    with pytest.raises(ConfigError, match=r"teacher\.float32=true needs float32"):
        trainer.fit(module, loader)


def test_total_loss_is_the_weighted_sum_of_the_terms():
    module = make_module()
    weights = [term.weight for term in module.terms.values()]
    assert weights == [1.0, 1.0, 0.05, 1.0, 20.0]  # ce, kd, category_contrast, center_align, feature_align
    losses = {name: torch.tensor(float(i + 1), requires_grad=True) for i, name in enumerate(module.terms)}
    total = module.step.total(losses)
    assert total.item() == pytest.approx(1 + 2 + 0.05 * 3 + 4 + 20 * 5)
    total.backward()
    assert [losses[name].grad.item() for name in module.terms] == pytest.approx(weights)


def test_the_training_step_is_the_distill_step_and_hands_its_losses_to_the_backward_hooks():
    module = make_module()
    module.eval()  # deterministic BatchNorm: both passes see the same features
    b = batch()
    _, losses, total = module.step(b)
    assert set(losses) == set(module.terms)
    assert total.item() == pytest.approx(sum(module.terms[k].weight * v for k, v in losses.items()).item())
    handed = []
    module.add_loss_listener(handed.append)
    module.add_loss_listener(handed.append)  # added once
    trained = module.training_step(b, 0)
    assert trained.item() == pytest.approx(total.item(), rel=1e-6)
    assert len(handed) == 1
    assert {k: v.item() for k, v in handed[0].items()} == pytest.approx(
        {k: v.item() for k, v in losses.items()}, rel=1e-6
    )
    assert handed[0]["ce"].grad_fn is not None  # with their graph, before the backward
    # the step computes with the module's own (registered, optimized, checkpointed) parts
    assert module.step.student is module.student and module.step.terms is module.terms
    assert module.step.teacher is module.teacher


def test_the_module_adds_final_validation_and_the_preview_scheduler_only_with_preview_weights():
    from pckd_lightning.callbacks import ValidateFinalEpoch
    from pckd_lightning.preview import PreviewWeighting

    assert [type(c) for c in make_module().configure_callbacks()] == [ValidateFinalEpoch, PreviewWeighting]
    plain = make_module(terms=pckd_terms(preview=False)).configure_callbacks()
    assert [type(c) for c in plain] == [ValidateFinalEpoch]


@pytest.mark.parametrize("method", METHODS)
def test_every_methods_step_under_bf16_autocast_gives_float32_finite_losses_and_gradients(method, one_thread):
    """What a bf16-mixed run's training step does (Lightning wraps it in autocast), for every distill config:
    each loss a finite float32 scalar, and finite gradients that reach the student."""
    module, b = method_module(method)
    assert not module.skipped_terms
    raw = {}  # each term's own value, before a float32 preview weight could hide a bf16 one
    for name, term in module.terms.items():
        term.register_forward_hook(lambda _m, _i, out, name=name: raw.__setitem__(name, out))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, losses, total = module.step(b)
    assert set(raw) == set(losses) == set(module.terms) and losses
    for name, value in raw.items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), (name, value.dtype)
    for name, value in {**losses, "total": total}.items():
        assert value.dtype == torch.float32 and value.dim() == 0 and torch.isfinite(value), (name, value)
    total.backward()
    trained = [
        (n, p) for n, p in module.named_parameters() if p.requires_grad and not n.startswith("teacher.")
    ]
    student = [n for n, p in trained if n.startswith("student.") and p.grad is not None]
    assert student, "no gradient reached the student"
    for name, p in trained:
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
