"""The Hugging Face Hub, only when it can be reached: a cheap offline check and the names DBA Studio shares.

Everything that takes a Hub id (a data set to train on, a repo to push an export to) first asks
:func:`offline_reason`, so an offline machine gets one clear sentence at once instead of huggingface_hub's
five retries (about 25 s) ending in a network traceback.
"""
from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

DEFAULT_MODEL_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub repository of the model that the embedded default was quantised from (Apache-2.0)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = ("1", "true", "yes", "on")


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` (optionally ``org/name:split`` for data sets): the shape of a Hub id, nothing checked online."""
    return bool(_HUB_ID.match(str(name).split(":", 1)[0])) and not str(name).startswith((".", "/", "~"))


def offline_reason(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be used from here (``HF_HUB_OFFLINE`` set, or its host unreachable), or None.

    Costs one TCP connection attempt of at most ``timeout`` seconds (no request is sent).
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]} is set (offline mode)"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host} cannot be reached from this machine ({e.strerror or type(e).__name__})"
    return None
