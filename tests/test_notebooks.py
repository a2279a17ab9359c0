"""The tutorial notebooks run top to bottom, headless, in FAST mode (tiny model, a few steps), without an error.

Each notebook runs in a fresh kernel of this interpreter (so it sees the project's venv) started from notebooks/,
with ``DBA_FAST=1`` in the kernel's environment: a kernel spec written to a temporary JUPYTER_PATH folder carries it,
so the test does not depend on which kernel specs the machine has installed.
"""
import json
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_catastrophic_forgetting", "02_global_gradient", "03_dba_step_by_step", "04_compare_methods"]
KERNEL = "dba-studio-fast"
CELL_TIMEOUT_S = 600  # one cell; a FAST cell takes seconds, but the CI machine may be slow and shared


def test_the_four_tutorials_are_there():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_saved_without_outputs_and_has_the_parts_a_tutorial_needs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(code) if c.outputs or c.execution_count is not None]
    assert not dirty, f"{path.name}: code cells {dirty} hold outputs; clear them before saving (keeps the repo small)"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert "what you will learn" in text and "exercises" in text
    assert 'os.environ.get("DBA_FAST"' in code[0].source, "the first cell must be the setup cell with the FAST switch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_opens_in_colab_and_shares_one_setup_helper(path):
    nb = nbformat.read(path, as_version=4)
    intro = nb.cells[0].source
    badge = re.search(r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/notebooks/"
                      + re.escape(path.name) + r"\)", intro)
    assert badge and "colab-badge.svg" in intro, "no Colab badge opening this notebook"
    setup = [c for c in nb.cells if c.cell_type == "code"][0].source
    assert f"git clone -q --depth 1 https://github.com/{badge.group(1)} /content/dba-studio" in setup, \
        "the clone line names another repository than the badge (python -m dba.tutorial set-repo OWNER/NAME)"
    assert f'setup("{path.name[:2]}", fast=FAST)' in setup and "from dba.tutorial import setup" in setup
    assert len(setup.splitlines()) <= 16, "the setup cell is a few lines; what it does belongs in dba/tutorial.py"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "progress=False" not in code, "every long cell shows a progress bar"
    assert "alpha=" not in code, "LoRA alpha: the library's default (2 x rank)"


@pytest.fixture(scope="module")
def fast_kernel(tmp_path_factory):
    """A kernel spec named KERNEL for this interpreter, with DBA_FAST=1, found through JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    scratch = tmp_path_factory.mktemp("notebook-runs")  # FAST run folders (tempfile.mkdtemp) land here, not in /tmp
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "DBA Studio (FAST)", "language": "python",
        # One thread: the tiny model gains nothing from more, and on a shared, busy machine (CI, or several
        # developers on one box) OpenMP threads that wait for each other make every op many times slower.
        "env": {"DBA_FAST": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(scratch)},
    }))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", os.pathsep.join(p for p in (str(root), os.environ.get("JUPYTER_PATH")) if p))
    yield KERNEL
    mp.undo()


def _outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_fast_mode(path, fast_kernel):
    nb = nbformat.read(path, as_version=4)
    before = sorted(p.name for p in NOTEBOOKS_DIR.iterdir())
    client = nbclient.NotebookClient(nb, kernel_name=fast_kernel, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
    client.execute()  # raises CellExecutionError (naming the cell and the traceback) when any cell fails
    setup_output = _outputs_text(nb.cells[[c.cell_type for c in nb.cells].index("code")])
    assert "FAST mode: on" in setup_output, f"the kernel did not get DBA_FAST=1:\n{setup_output}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert sorted(p.name for p in NOTEBOOKS_DIR.iterdir()) == before, "the notebook wrote files into notebooks/"
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert images >= 1, "no figure was displayed"
