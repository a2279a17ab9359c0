"""What every tab module shares: the page context (:class:`Ctx`), the error guard, and small value parsers."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import gradio as gr

from dba.config import Preset
from dba.errors import DBAError

from ..jobs import friendly_error
from ..page import Page
from ..settings import StudioSettings

PLOT = {"show_label": False, "container": True}
"""The figures carry their own titles; Gradio's label badge would sit on top of them."""


@dataclass
class Ctx:
    """Handed to each tab's ``build``: the settings, the page machinery and the components every tab uses."""

    settings: StudioSettings
    page: Page
    sid: gr.State
    """The session key the page settled on (server-side state of the Gradio session)."""
    job_html: gr.HTML
    """The job bar every Start button updates."""

    @property
    def preset(self) -> Preset:
        return self.settings.preset

    @property
    def public(self) -> bool:
        return self.settings.public

    def cap(self, local: int, public: int) -> int:
        """A slider's maximum: ``public`` in public mode (a limit), else ``local``."""
        return min(local, public) if self.public else local


def guard(fn):
    """Turn the engine's user errors (and surprises) into a visible gr.Error; the app keeps running."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except DBAError as e:
            raise gr.Error(str(e), duration=None) from None
        except Exception as e:  # noqa: BLE001 -- OOM, device problems, bugs: say so, keep serving
            raise gr.Error(friendly_error(e), duration=None) from None
    return wrapper


def optional(x, what: str) -> float | None:
    """An optional number field: empty = None (the library's meaning of None for that field), else the number."""
    from ..limits import number

    return None if x is None or not str(x).strip() else number(str(x).strip(), what)


def parse_ratios(text: str) -> tuple[float, ...]:
    if not text or not str(text).strip():
        return ()
    try:
        vals = tuple(float(t) for t in str(text).replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise DBAError(f"Mixture ratios must be numbers separated by commas, e.g. 0.25, 0.5; got {text!r}.") from None
    if any(not 0 < v < 1 for v in vals):
        raise DBAError("Each mixture ratio is a share of general examples per batch, strictly between 0 and 1.")
    return vals
