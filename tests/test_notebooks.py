"""The notebooks in notebooks/ run top to bottom, show what they promise and write nothing into the repository.

Each notebook is executed with nbclient in a kernel of *this* interpreter (a kernel spec written into a
temporary folder, so no user-level or system kernel is used), with the kernel's working directory set to
``notebooks/`` as when a user opens them, and ``TMPDIR`` pointing at a pytest temporary folder, where the
notebooks put everything they write.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

from helpers import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the importorskips)
from jupyter_client.manager import AsyncKernelManager  # noqa: E402

NOTEBOOKS = REPO / "notebooks"
NAMES = ("quickstart", "analysis", "comparison")
KERNEL = "pckd-test-python"
CELL_TIMEOUT_S = 600
#: the image side the tests train at: the digits' own 8x8 (the notebooks' default is 16)
SMALL = 8
ACCURACY = re.compile(r"^(teacher|student) \((\S+)\)\s+val top-1: ([-+\d.eE]+|nan|inf)%$", re.MULTILINE)


def read(name: str, **parameters: object):
    """The notebook, with ``parameters`` set in a cell right after its ``parameters`` cell (papermill's way)."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if parameters:
        position = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
        nb.cells.insert(position + 1, nbformat.v4.new_code_cell(injected))
    return nb


def kernel_manager(workdir: Path) -> AsyncKernelManager:
    """A kernel of the running interpreter, found through a spec that exists only in ``workdir``."""
    spec_dir = workdir / "kernels" / KERNEL
    spec_dir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "pckd-lightning tests",
        "language": "python",
        # everything the notebooks write goes to tempfile's folder; W&B, if anything touched it, stays offline
        "env": {"TMPDIR": str(tmp), "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(workdir / "kernels")])
    return AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if ".ipynb_checkpoints" not in p.parts}


def execute(nb, workdir: Path):
    """Run every cell (an error in any cell fails the test with the cell's traceback)."""
    before = listing(NOTEBOOKS)
    km = kernel_manager(workdir)
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute(cleanup_kc=True)  # a client given a manager would leave its kernel running
    assert not km.has_kernel, "the notebook's kernel was left running"
    assert listing(NOTEBOOKS) == before, "a notebook wrote into notebooks/ (it must use temporary folders)"
    return nb


def stdout(nb) -> str:
    return "".join(
        out.get("text", "")
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "stream" and out.name == "stdout"
    )


def accuracies(nb) -> dict[str, float]:
    found = {who: float(value) for who, _, value in ACCURACY.findall(stdout(nb))}
    assert set(found) == {"teacher", "student"}, f"accuracy lines not found in:\n{stdout(nb)[-2000:]}"
    return found


def check_outputs(nb, workdir: Path) -> dict[str, float]:
    """Accuracies are percentages above chance, every plotting cell shows a PNG, writes go to TMPDIR."""
    result = accuracies(nb)
    for who, value in result.items():
        assert 0.0 <= value <= 100.0, f"{who} accuracy {value} is not a percentage"
        assert value > 20.0, f"{who} accuracy {value}% is at chance level (10 classes): training is broken"
    plotting = [cell for cell in nb.cells if cell.cell_type == "code" and "plt.show()" in cell.source]
    assert plotting, "the notebook has no plots"
    for cell in plotting:
        kinds = {kind for out in cell.outputs for kind in out.get("data", {})}
        assert "image/png" in kinds, f"no image/png output from the cell:\n{cell.source[:300]}"
    written = re.search(r"this notebook writes into (\S+)", stdout(nb))
    assert written and Path(written.group(1)).is_relative_to(workdir / "tmp")
    return result


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart")
    # shorter than the notebook's 6 + 5 epochs, on the digits' own 8x8 pixels instead of 16x16 (a third of the
    # time): the test checks what it shows, not how far it trains
    return execute(read("quickstart", TEACHER_EPOCHS=2, STUDENT_EPOCHS=2, IMAGE_SIZE=SMALL), workdir), workdir


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name):
    nb = read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "clear the outputs before saving"
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "no cell tagged 'parameters'"


@pytest.mark.slow
def test_quickstart_runs_and_shows_accuracies_and_plots(quickstart):
    nb, workdir = quickstart
    check_outputs(nb, workdir)
    text = stdout(nb)
    assert "active terms: ['ce', 'kd', 'category_contrast', 'center_align', 'feature_align']" in text
    assert "teacher val top-1 as measured by the run:" in text  # the Hydra alternative ran
    for artifact in ("teacher.pth", "student.pth"):
        assert re.search(rf"= '(\S+/{artifact})'", text), f"{artifact} path not printed"


@pytest.mark.slow
def test_analysis_runs_on_its_own(tmp_path):
    # its fallback training shortened, and PCA (t-SNE runs in the test that reads the quickstart's checkpoints)
    parameters = {
        "FALLBACK_TEACHER_EPOCHS": 2,
        "FALLBACK_STUDENT_EPOCHS": 2,
        "EMBEDDING": "pca",
        "IMAGE_SIZE": SMALL,
    }
    nb = execute(read("analysis", **parameters), tmp_path)
    check_outputs(nb, tmp_path)
    text = stdout(nb)
    assert "trained a resnet20 teacher" in text and "distilled a resnet8 student" in text  # the fallback
    assert "off-diagonal correlation with the teacher" in text


@pytest.mark.slow
def test_analysis_reads_the_quickstart_checkpoints(quickstart, tmp_path):
    """The parameter cell's checkpoints are used as given: no fallback training, the same accuracies."""
    quick_nb, _ = quickstart
    quick_text = stdout(quick_nb)
    paths = {
        key: ast.literal_eval(value)
        for key, value in re.findall(r"^\s*(CHECKPOINT|TEACHER_CHECKPOINT) = ('[^']+')$", quick_text, re.M)
    }
    assert set(paths) == {"CHECKPOINT", "TEACHER_CHECKPOINT"}
    assert all(Path(p).is_file() for p in paths.values())
    nb = execute(read("analysis", **paths, IMAGE_SIZE=SMALL), tmp_path)  # the quickstart's size
    result = check_outputs(nb, tmp_path)
    text = stdout(nb)
    assert "trained a" not in text and "distilled a" not in text
    for who, value in accuracies(quick_nb).items():
        assert result[who] == pytest.approx(value, abs=0.3), who  # same weights, same validation split


@pytest.mark.slow
def test_comparison_sweeps_reports_plots_and_keeps_wandb_offline(tmp_path):
    nb = execute(read("comparison"), tmp_path)
    text = stdout(nb)
    assert "6 jobs finished" in text and "6 offline W&B runs, one per job" in text
    for row in ("| kd |", "| pckd |", "| student (scratch) |"):
        assert row in text, row
    assert "Δ vs KD" in text
    plotting = [cell for cell in nb.cells if cell.cell_type == "code" and "plt.show()" in cell.source]
    assert plotting and all(
        "image/png" in {kind for out in cell.outputs for kind in out.get("data", {})} for cell in plotting
    )
    written = re.search(r"this notebook writes into (\S+)", text)
    assert written and Path(written.group(1)).is_relative_to(tmp_path / "tmp")
