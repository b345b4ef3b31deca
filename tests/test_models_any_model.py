"""Any model as teacher or student: timm's architectures (``timm:<name>``) and your own nn.Module with taps,
read through their own APIs, and the pair check every loss term makes before any work."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from hydra.utils import get_class
from torch import nn

import user_models
from helpers import METHODS, QUIET, REPO, compose_config, save_teacher
from pckd_lightning.distillation import load_teacher
from pckd_lightning.errors import CheckpointError, ConfigError
from pckd_lightning.evaluate import load_for_eval
from pckd_lightning.evaluate import main as eval_main
from pckd_lightning.losses import ATTerm, CenterAlignTerm, FeatureAlignTerm, KDTerm, PairInfo
from pckd_lightning.models import Capability, TappedModel, TimmModel, create_model, timm_models
from pckd_lightning.run import fit

#: a ViT for 32x32 images: 8x8 patches of 4 pixels, 4 blocks 48 wide
VIT = {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 48, "num_heads": 2}


@pytest.fixture(autouse=True)
def _seeded_single_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def vit(**options) -> TimmModel:
    return create_model("timm:vit_tiny_patch16_224", num_classes=10, kwargs=VIT, **options)


# ---- timm ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "stage_shapes"),
    [
        ("vit_tiny_patch16_224", VIT, [(48, 8, 8)] * 4),  # token maps on the 8x8 patch grid
        ("mobilenetv3_small_050", {}, [(16, 16, 16), (8, 8, 8), (16, 4, 4), (24, 2, 2), (288, 1, 1)]),
    ],
)
def test_timm_outputs_come_from_timms_own_api(name, kwargs, stage_shapes):
    model = create_model(f"timm:{name}", num_classes=10, kwargs=kwargs).eval()
    bare = model.model  # the timm model itself
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, with_features=True)
        _, maps = bare.forward_intermediates(x, output_fmt="NCHW")
        torch.testing.assert_close(model(x), bare(x), rtol=0, atol=0)  # the plain forward is timm's own
        torch.testing.assert_close(out.logits, bare(x))
        torch.testing.assert_close(out.pooled, bare.forward_head(bare.forward_features(x), pre_logits=True))
        torch.testing.assert_close(model.classifier_layer(out.pooled), out.logits)
    assert model.classifier_layer is bare.get_classifier()
    assert model.feature_dim == out.pooled.shape[1]
    assert [tuple(s.shape[1:]) for s in out.stages] == stage_shapes
    for ours, timms in zip(out.stages, maps, strict=True):
        torch.testing.assert_close(ours, timms)
    assert model.capabilities == frozenset(Capability)


def test_a_vit_token_map_is_its_patch_tokens_on_the_patch_grid():
    model = vit().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens = model.model.forward_intermediates(x, indices=[3], output_fmt="NLC", intermediates_only=True)[
            0
        ]
        grid = model(x, with_features=True).stages[3]
    assert tokens.shape == (2, 64, 48)  # the class token dropped, 8x8 patches
    torch.testing.assert_close(grid[:, :, 2, 5], tokens[:, 2 * 8 + 5])  # row 2, column 5


def test_timm_stages_pick_feature_info_entries():
    model = vit(stages=[1, 3]).eval()
    with torch.no_grad():
        assert len(model(torch.randn(1, 3, 32, 32), with_features=True).stages) == 2
    with pytest.raises(ConfigError, match=r"stages \[7\] do not exist; it has 4 feature_info entries"):
        vit(stages=[7])


def test_a_timm_state_dict_is_timms_own_both_ways():
    model = vit()
    bare = timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT)
    assert list(model.state_dict()) == list(bare.state_dict())
    model.load_state_dict(bare.state_dict())  # strict
    bare.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), bare.eval()(x))


def test_timm_names_and_options_are_checked():
    with pytest.raises(ConfigError, match=r"timm has no model 'vit_tinny'.*similar names"):
        create_model("timm:vit_tinny", num_classes=10)
    with pytest.raises(ConfigError, match=r"kwargs may not set num_classes"):
        create_model("timm:resnet10t", num_classes=10, kwargs={"num_classes": 5})
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*timm:<any timm model>"):
        create_model("nope")


def test_pretrained_is_refused_when_the_weights_are_neither_cached_nor_reachable(monkeypatch):
    monkeypatch.setattr(timm_models, "reachable", lambda host, timeout=3.0: False)
    with pytest.raises(CheckpointError) as err:
        create_model("timm:resnet10t", num_classes=10, pretrained=True)
    text = str(err.value)
    assert "pretrained=true: the weights of timm:resnet10t are not in timm's local cache" in text
    assert "huggingface.co cannot be reached (no network?)" in text
    assert "set model.teacher.checkpoint" in text and "pretrained=false" in text


def test_pretrained_normalization_converts_the_datas_inputs():
    model = vit(normalize="pretrained_cfg").eval()  # the ViT's pretrained_cfg: mean = std = 0.5
    data_mean, data_std = (0.2, 0.3, 0.4), (0.1, 0.2, 0.3)
    model.adapt_to_data(data_mean, data_std)
    pixels = torch.rand(2, 3, 32, 32)
    as_data = (pixels - torch.tensor(data_mean).view(1, 3, 1, 1)) / torch.tensor(data_std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(as_data), model.model((pixels - 0.5) / 0.5))
        torch.testing.assert_close(
            model(as_data, with_features=True).logits, model.model((pixels - 0.5) / 0.5)
        )
    untouched = vit().eval()  # normalize: data (no pretrained weights)
    untouched.adapt_to_data(data_mean, data_std)
    with torch.no_grad():
        torch.testing.assert_close(untouched(as_data), untouched.model(as_data), rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_timm_teacher_loads_strictly_from_a_timm_state_dict(tmp_path, suffix):
    bare = timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT).eval()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        safetensors.torch.save_file(bare.state_dict(), path)
    else:
        torch.save(bare.state_dict(), path)
    teacher = load_teacher("timm:vit_tiny_patch16_224", str(path), num_classes=10, kwargs=VIT)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), bare(x))
    with pytest.raises(CheckpointError, match=r"tensors of other shapes"):  # another width
        load_teacher("timm:vit_tiny_patch16_224", str(path), num_classes=10, kwargs={**VIT, "embed_dim": 32})
    with pytest.raises(CheckpointError, match=r"missing keys.*unexpected keys"):  # another architecture
        load_teacher("timm:mobilenetv3_small_050", str(path), num_classes=10)


# ---- your own module, with taps -------------------------------------------------------------------------


def test_a_tapped_module_gives_what_its_taps_name():
    model = create_model(
        "user_models.MyNet",
        num_classes=10,
        taps={"classifier": "fc", "features": ["stem", "layer1", "layer2"]},
    ).eval()
    assert isinstance(model, TappedModel)
    bare = model.model
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = model(x, with_features=True)
        torch.testing.assert_close(model(x), bare(x), rtol=0, atol=0)
        torch.testing.assert_close(out.logits, bare(x))
        torch.testing.assert_close(out.pooled, bare.head(bare.layer2(bare.layer1(bare.stem(x)))))
        torch.testing.assert_close(out.stages[2], bare.layer2(bare.layer1(bare.stem(x))))
    assert [tuple(s.shape[1:]) for s in out.stages] == [(8, 16, 16), (8, 16, 16), (16, 8, 8)]
    assert model.classifier_layer is bare.fc and model.feature_dim == 16
    assert model.capabilities == frozenset(Capability)
    assert list(model.state_dict()) == list(bare.state_dict())  # its own weight files load


def test_your_own_module_loads_as_a_teacher_strictly(tmp_path):
    bare = user_models.MyNet(num_classes=10).eval()
    torch.save({"model": bare.state_dict()}, tmp_path / "mynet.pth")  # your module's own keys
    teacher = load_teacher(
        "user_models.MyNet", str(tmp_path / "mynet.pth"), num_classes=10, taps={"classifier": "fc"}
    )
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), bare(x), rtol=0, atol=0)
    assert teacher.capabilities == {Capability.LOGITS, Capability.EMBEDDING, Capability.CLASSIFIER}
    with pytest.raises(CheckpointError, match=r"tensors of other shapes than 'user_models.MyNet'"):
        load_teacher("user_models.MyNet", str(tmp_path / "mynet.pth"), num_classes=10, width=16)


def test_taps_are_checked_when_the_model_is_built():
    with pytest.raises(
        ConfigError, match=r"MyNet has no submodule\(s\) \['layer9'\] to tap; its named modules"
    ):
        create_model("user_models.MyNet", num_classes=10, taps={"features": ["stem", "layer9"]})
    with pytest.raises(
        ConfigError, match=r"taps.features must name submodules whose outputs are \[B, C, H, W\]"
    ):
        create_model("user_models.TokenNet", num_classes=10, taps={"features": ["embed", "tokens"]})
    with pytest.raises(
        ConfigError, match=r"unknown taps \['pool'\]; valid taps: embedding, features, classifier"
    ):
        create_model("user_models.MyNet", num_classes=10, taps={"pool": "head"})
    with pytest.raises(ConfigError, match=r"cannot import model 'user_models.Nope'"):
        create_model("user_models.Nope", num_classes=10)
    untapped = create_model("user_models.MyNet", num_classes=10)
    assert untapped.capabilities == {Capability.LOGITS}


# ---- the pair check ----------------------------------------------------------------------------------


def test_the_pair_check_names_the_term_what_is_missing_and_the_fix():
    student = create_model("user_models.MyNet", num_classes=10)  # logits only
    teacher = vit()
    pair = PairInfo(student, teacher, 10)
    KDTerm().build(pair)  # logits suffice
    with pytest.raises(ConfigError) as err:
        FeatureAlignTerm().build(pair)
    assert str(err.value) == (
        "loss term FeatureAlignTerm needs the student's embedding (it reads embedding), but MyNet (taps "
        "{'embedding': None, 'features': [], 'classifier': None}) does not give its embedding: set "
        "model.student.taps.embedding (the module whose output is the classifier's input, e.g. the pooling) or "
        'taps.classifier; or choose a method that needs less (README, "Any model": which methods need what)'
    )
    one_map = PairInfo(create_model("resnet8", num_classes=10), vit(stages=[3]), 10)
    with pytest.raises(
        ConfigError,
        match=r"ATTerm needs the teacher's feature maps .* gives 1 feature map\(s\) "
        r"\(\['blocks.3'\]\); set model.teacher.stages to two or more",
    ):
        ATTerm().build(one_map)


def test_center_align_is_dropped_for_a_vit_teacher_of_another_width():
    term = CenterAlignTerm()
    term.build(PairInfo(create_model("resnet8", num_classes=10), vit(), 10))
    assert term.skip_reason == (
        "center_align skipped: student feature dim 64 != teacher feature dim 48, so the category centers "
        "cannot be compared"
    )


def test_a_classifier_that_is_not_linear_gives_no_category_centers():
    class ConvHead(nn.Module):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.fc = nn.Conv2d(4, num_classes, 1)

        def forward(self, x):
            return self.fc(self.body(x)).mean(dim=(2, 3))

    model = TappedModel(ConvHead(), 10, classifier="fc")
    assert Capability.CLASSIFIER not in model.capabilities
    with pytest.raises(ConfigError, match=r"set model.<role>.taps.classifier to the final nn.Linear"):
        model.classifier_layer  # noqa: B018


def test_sync_batchnorm_keeps_timms_activation_and_refuses_what_it_cannot_copy():
    from timm.layers import BatchNormAct2d

    from pckd_lightning.distributed import GlobalBatchNormAct, convert_batchnorm

    converted = convert_batchnorm(nn.Sequential(BatchNormAct2d(4, act_layer=nn.ReLU)))
    assert isinstance(converted[0], GlobalBatchNormAct) and isinstance(converted[0].act, nn.ReLU)
    x = torch.randn(2, 4, 3, 3)
    assert (converted.eval()(x) >= 0).all()  # the activation still runs

    class ScaledBatchNorm(nn.BatchNorm2d):
        def forward(self, x):
            return 2 * super().forward(x)

    with pytest.raises(
        ConfigError, match=r"sync_batchnorm cannot convert .*ScaledBatchNorm.*sync_batchnorm=false"
    ):
        convert_batchnorm(nn.Sequential(ScaledBatchNorm(4)))


# ---- through the app ------------------------------------------------------------------------------------

#: a ViT for the digits at 8x8: 4x4 patches of 2 pixels, 2 blocks 16 wide (a teacher's maps: 2, all 4x4)
DIGITS_VIT = {"img_size": 8, "patch_size": 2, "depth": 2, "embed_dim": 16, "num_heads": 2}
VIT_TEACHER = [
    "model.teacher.name=timm:vit_tiny_patch16_224",
    "+model.teacher.kwargs={img_size:8,patch_size:2,depth:2,embed_dim:16,num_heads:2}",
]
#: two training steps; validation on the whole split (360 digits), which pckd-eval measures again
TRAIN_TWO_STEPS = ["data.image_size=8", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", *QUIET]
TWO_STEPS = [*TRAIN_TWO_STEPS, "+trainer.limit_val_batches=1"]
#: the methods a ViT teacher -> timm CNN student pair cannot serve, and the refusal that says why
REFUSED = {
    "fitnet": "distill.terms.fitnet: FitNetTerm: hint_layer=2 does not exist for this pair (5 student and 2 "
    "teacher feature maps); valid values: 0, 1 (distill.terms.<name>.hint_layer)",
    "fsp": "distill.terms.fsp: FSPTerm needs the same channel count at every feature map of both networks (stem, "
    "then each stage), but the student has [16, 24, 32, 48, 64] and the teacher [16, 16]. FSP is only defined "
    "for same-family pairs",
}


@pytest.fixture(scope="module")
def vit_teacher(tmp_path_factory) -> Path:
    """A random-init timm ViT's state dict, timm's own keys, as a teacher file."""
    torch.manual_seed(0)
    bare = timm.create_model("vit_tiny_patch16_224", num_classes=10, **DIGITS_VIT)
    path = tmp_path_factory.mktemp("teacher") / "vit.safetensors"
    safetensors.torch.save_file(bare.state_dict(), path)
    return path


def trained_terms(folder: Path) -> dict[str, list[float]]:
    with (folder / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {k[6:]: [float(r[k]) for r in rows if r.get(k)] for k in rows[0] if k.startswith("train/")}


@pytest.mark.parametrize(
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "crd" else m for m in METHODS]
)
def test_every_method_trains_a_vit_teacher_into_a_timm_cnn_or_is_refused(method, vit_teacher, tmp_path):
    overrides = [
        f"distill={method}",
        *VIT_TEACHER,
        f"model.teacher.checkpoint={vit_teacher}",
        "model.student.name=timm:test_efficientnet",
        *TWO_STEPS,
    ]
    if method in ("ab", "fsp", "ft"):
        overrides.append("distill.callbacks.init_stage.init_epochs=1")
    cfg = compose_config(overrides, output_dir=tmp_path / "run")
    if method in REFUSED:
        with pytest.raises(ConfigError) as err:
            fit(cfg)
        assert str(err.value).startswith(REFUSED[method])
        assert not (tmp_path / "run" / "csv").exists()  # before any work
        return
    summary = fit(cfg)
    assert summary["status"] == "complete" and summary["epochs"] == 1
    values = trained_terms(tmp_path / "run")
    for term in summary["terms"]:
        assert len(values[term]) == 1 and math.isfinite(values[term][0]), term
    if method.startswith("pckd"):  # FA's MLP bridges 256 -> 16; CA cannot compare 256- and 16-wide centers
        assert "feature_align" in summary["terms"] and "category_contrast" in summary["terms"]
        assert summary["skipped_terms"] == {
            "center_align": "center_align skipped: student feature dim 256 != teacher feature dim 16, so the "
            "category centers cannot be compared"
        }


def test_the_pair_check_refuses_before_any_work_through_the_app(vit_teacher, tmp_path):
    cfg = compose_config(
        [
            "distill=at",
            *VIT_TEACHER,
            "+model.teacher.stages=[1]",
            f"model.teacher.checkpoint={vit_teacher}",
            "model.student.name=timm:test_efficientnet",
            *TWO_STEPS,
        ],
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError) as err:
        fit(cfg)
    assert str(err.value).startswith(
        "distill.terms.at: loss term ATTerm needs the teacher's feature maps (it reads feature maps), but "
        "timm:vit_tiny_patch16_224 gives 1 feature map(s) (['blocks.1']); set model.teacher.stages to two or "
        "more feature_info indices"
    )


@pytest.mark.parametrize(
    ("taps", "method", "refusal"),
    [
        (
            ["+model.student.taps.classifier=fc", "+model.student.taps.features=[stem,layer1,layer2]"],
            "pckd",
            None,
        ),
        (
            ["+model.student.taps.classifier=fc", "+model.student.taps.features=[stem,layer1,layer2]"],
            "at",
            None,
        ),
        ([], "kd", None),  # logits only: no taps needed
        (
            [],
            "pckd",
            "distill.terms.category_contrast: loss term CategoryContrastTerm needs the student's embedding",
        ),
    ],
)
def test_your_own_module_by_target_with_taps_trains_or_is_refused(taps, method, refusal, tmp_path):
    teacher = save_teacher(tmp_path / "resnet20.pth", "resnet20", 10)
    cfg = compose_config(
        [
            f"distill={method}",
            f"model.teacher.checkpoint={teacher}",
            "model.student._target_=user_models.MyNet",
            "~model.student.name",
            "+model.student.width=32",  # MyNet's own option: 64 wide like the teacher, so CA applies
            *taps,
            *TWO_STEPS,
        ],
        output_dir=tmp_path / "run",
    )
    if refusal is not None:
        with pytest.raises(ConfigError, match=f"^{re.escape(refusal)}"):
            fit(cfg)
        return
    summary = fit(cfg)
    assert summary["epochs"] == 1 and summary["skipped_terms"] == {}
    assert summary["student"] == "user_models.MyNet"
    assert all(math.isfinite(v[0]) for v in trained_terms(tmp_path / "run").values())


@pytest.fixture(scope="module")
def timm_student_run(tmp_path_factory) -> Path:
    """A timm ViT trained from scratch on the digits (distill=ce): its run folder."""
    folder = tmp_path_factory.mktemp("timm_ce") / "run"
    overrides = ["model=digits_scratch_resnet8", "distill=ce", "model.student.name=timm:vit_tiny_patch16_224"]
    overrides.append("+model.student.kwargs={img_size:8,patch_size:2,depth:2,embed_dim:16,num_heads:2}")
    fit(compose_config([*overrides, *TRAIN_TWO_STEPS], output_dir=folder))
    return folder


def test_a_trained_timm_student_loads_as_a_teacher_with_the_same_logits(timm_student_run):
    checkpoint = torch.load(timm_student_run / "checkpoints" / "last.ckpt", weights_only=False)
    student = create_model("timm:vit_tiny_patch16_224", num_classes=10, kwargs=DIGITS_VIT)
    student.load_state_dict(
        {k[8:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("student.")}
    )
    teacher = load_teacher(
        "timm:vit_tiny_patch16_224", str(timm_student_run / "student.pth"), num_classes=10, kwargs=DIGITS_VIT
    )
    bare = timm.create_model("vit_tiny_patch16_224", num_classes=10, **DIGITS_VIT)
    bare.load_state_dict(torch.load(timm_student_run / "student.pth")["model"])  # timm's own keys
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        expected = student.eval()(x)
        torch.testing.assert_close(teacher(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(bare.eval()(x), expected, rtol=0, atol=0)
    assert not torch.allclose(expected, create_model("timm:vit_tiny_patch16_224", 10, kwargs=DIGITS_VIT)(x))


@pytest.mark.slow
def test_pckd_eval_builds_a_pretrained_timm_student_from_its_weights_with_its_input_conversion(
    timm_student_run, tmp_path
):
    """A run that fine-tuned pretrained timm weights: evaluation needs no download (the checkpoint holds the
    weights) and keeps the conversion to the weights' normalization (no weight: a state dict cannot carry
    it), also with --arch naming the run's model and through the Python API."""
    import shutil

    import yaml

    run = tmp_path / "run"
    shutil.copytree(timm_student_run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["student"]["pretrained"] = True  # fails offline if it downloads
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        plain = load_for_eval(timm_student_run).model(x)
        for arch in (None, "timm:vit_tiny_patch16_224"):
            model = load_for_eval(run, arch=arch).model
            assert model.normalize == "pretrained_cfg"
            assert not torch.allclose(model(x), plain, atol=1e-3)  # the digits' inputs converted to 0.5/0.5


def test_pckd_eval_and_onnx_export_of_a_timm_student(timm_student_run, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install .[export])")
    summary = json.loads((timm_student_run / "summary.json").read_text())
    out = tmp_path / "student.onnx"
    argv = ["--checkpoint", str(timm_student_run), "--export", "onnx", "--out", str(out), "--json"]
    assert eval_main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "timm:vit_tiny_patch16_224"
    assert result["top1"] == pytest.approx(summary["last_top1"], abs=1e-4)
    model = load_for_eval(timm_student_run).model
    x = torch.randn(3, 3, 8, 8)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=1e-4)
    scripted = tmp_path / "student.pt"
    assert (
        eval_main(
            [
                "--checkpoint",
                str(timm_student_run),
                "--export",
                "torchscript",
                "--out",
                str(scripted),
                "--no-eval",
            ]
        )
        == 0
    )
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(scripted))(x), model(x), atol=1e-5, rtol=0)


def test_pckd_eval_and_onnx_export_of_a_tapped_student(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install .[export])")
    folder = tmp_path / "run"
    overrides = ["model=digits_scratch_resnet8", "distill=ce", "model.student._target_=user_models.MyNet"]
    overrides += ["~model.student.name", "+model.student.taps.classifier=fc"]
    summary = fit(compose_config([*overrides, *TRAIN_TWO_STEPS], output_dir=folder))
    capsys.readouterr()  # the run's own output
    out = tmp_path / "student.onnx"
    assert eval_main(["--checkpoint", str(folder), "--export", "onnx", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arch"] == "user_models.MyNet"
    assert result["top1"] == pytest.approx(summary["last_top1"], abs=1e-4)
    bare = user_models.MyNet(num_classes=10).eval()
    bare.load_state_dict(torch.load(folder / "student.pth")["model"])  # the module's own keys
    x = torch.randn(3, 3, 8, 8)
    (logits,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), bare(x), atol=1e-4, rtol=1e-4)


def requirement_rows() -> list[str]:
    """The README's table of which methods need what, from the terms' declarations (methods alike grouped)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for method in METHODS:
        needs: set[Capability] = set()
        conditions = []
        for name, term in compose_config([f"distill={method}"]).distill.terms.items():
            if term is not None:
                cls = get_class(term._target_)
                needs |= cls.requires
                if cls.pair_condition:
                    conditions.append(f"{name}: {cls.pair_condition}")
        key = (", ".join(c.value for c in Capability if c in needs), "; ".join(conditions) or "—")
        groups.setdefault(key, []).append(f"`{method}`")
    return [f"| {', '.join(methods)} | {needs} | {pair} |" for (needs, pair), methods in groups.items()]


def test_the_readme_says_which_methods_need_what_as_the_terms_declare():
    readme = (REPO / "README.md").read_text()
    table = readme.split("| `distill=` | reads of each model | the pair must also have |\n|---|---|---|\n")[1]
    assert table.split("\n\n")[0].splitlines() == requirement_rows()


@pytest.mark.slow
@pytest.mark.cifar
def test_pckd_distills_a_vit_into_a_timm_cnn_on_a_cifar_subset(cifar_root, tmp_path):
    """The issue's cross-architecture case on real CIFAR-100 (10 classes, 2 images each, two steps)."""
    torch.manual_seed(0)
    teacher = tmp_path / "vit.safetensors"
    safetensors.torch.save_file(
        timm.create_model("vit_tiny_patch16_224", num_classes=10, **VIT).state_dict(), teacher
    )
    kwargs = ",".join(f"{k}:{v}" for k, v in VIT.items())
    cfg = compose_config(
        [
            "distill=pckd",
            "data=cifar100",
            f"data.root={cifar_root}",
            "data.class_subset=10",
            "data.train_per_class=2",
            "data.val_per_class=2",
            "model=cifar100_pair",
            "model.teacher.name=timm:vit_tiny_patch16_224",
            f"+model.teacher.kwargs={{{kwargs}}}",
            f"model.teacher.checkpoint={teacher}",
            "model.student.name=timm:mobilenetv3_small_050",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            *QUIET,
        ],
        output_dir=tmp_path / "run",
    )
    summary = fit(cfg)
    assert summary["status"] == "complete" and summary["teacher"] == "timm:vit_tiny_patch16_224"
    assert {"kd", "category_contrast", "feature_align"} <= set(summary["terms"])
    assert "center_align" in summary["skipped_terms"]  # 48-wide ViT centers against the CNN's
    values = trained_terms(tmp_path / "run")
    assert all(math.isfinite(v) for term in summary["terms"] for v in values[term])


class Holder(nn.Module):
    """A module with a submodule of its own named ``model``: the wrapper's ``model.`` prefix must not eat it."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.model(x))


def test_a_submodule_named_model_loads_back_into_the_wrapper_and_the_bare_module():
    torch.manual_seed(0)
    saved = TappedModel(Holder(), 10, classifier="fc")
    state = saved.state_dict()
    assert set(state) == set(Holder().state_dict())  # the module's own names
    again = TappedModel(Holder(), 10, classifier="fc")
    again.load_state_dict(state)  # strict
    Holder().load_state_dict(state)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(again(x), saved(x))


def test_logits_of_another_width_than_the_classes_are_refused():
    with pytest.raises(
        ConfigError, match=r"Holder returns 1000 logits per image, but the data has 10 classes"
    ):
        TappedModel(Holder(num_classes=1000), 10)


def test_a_tap_changed_in_place_or_run_twice_is_refused_at_build():
    """torchvision's ResNet: bn1's output is overwritten by the in-place ReLU after it, layer1.0.bn2's by the
    residual +=, and layer1.0.relu runs twice per block; layer1's own output is what it says."""
    build = "torchvision.models.resnet18"
    with pytest.raises(ConfigError, match=r"^ResNet: the output of tap 'bn1' is changed in place later"):
        create_model(build, 10, taps={"classifier": "fc", "features": ["bn1", "layer1"]})
    with pytest.raises(ConfigError, match=r"output of tap 'layer1.0.bn2' is changed in place"):
        create_model(build, 10, taps={"features": ["layer1.0.bn2", "layer2"]})
    with pytest.raises(ConfigError, match=r"tap 'layer1.0.relu' runs 2 times in one forward"):
        create_model(build, 10, taps={"features": ["layer1.0.relu", "layer2"]})
    model = create_model(build, 10, taps={"classifier": "fc", "features": ["relu", "layer1", "layer2"]})
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    out = model(x, with_features=True)
    inner = model.model
    stem = inner.relu(inner.bn1(inner.conv1(x)))
    assert torch.equal(out.stages[0], stem) and torch.equal(out.stages[1], inner.layer1(inner.maxpool(stem)))


class NaNs(nn.Module):
    def forward(self, x):
        return x * math.nan


def test_a_tap_whose_output_is_nan_is_not_taken_for_one_changed_in_place():
    body = nn.Sequential(
        nn.Conv2d(3, 4, 3), NaNs(), nn.Conv2d(4, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = TappedModel(nn.Sequential(body, nn.Linear(4, 10)), 10, features=["0.1", "0.2"])
    assert Capability.FEATURE_MAPS in model.capabilities


class Fixed64(nn.Module):
    """A model that takes 64 px images only."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 64 * 64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_the_probe_image_takes_the_size_the_taps_give_and_a_misfit_names_them():
    with pytest.raises(ConfigError, match=r"cannot run a probe image of 3x32x32.*taps.input_size"):
        TappedModel(Fixed64(), 10)
    assert TappedModel(Fixed64(), 10, input_size=64)(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ConfigError, match=r"unknown taps \['size'\].*input_size, in_channels"):
        create_model("torchvision.models.resnet18", 10, taps={"size": 64})


class Broken(nn.Module):
    """A constructor that fits the call but fails inside (a typo in the user's code)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(num_classes)  # missing out_features


def test_an_error_inside_the_users_constructor_is_its_own_and_a_misfit_call_names_the_signature(monkeypatch):
    monkeypatch.setattr(user_models, "Broken", Broken, raising=False)
    with pytest.raises(TypeError, match=r"Linear.__init__\(\) missing 1 required positional argument"):
        create_model("user_models.Broken", 10)
    with pytest.raises(ConfigError, match=r"does not fit its signature.*unexpected keyword argument 'width'"):
        create_model("user_models.Broken", 10, width=3)
