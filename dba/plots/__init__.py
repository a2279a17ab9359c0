"""Plots of runs, anchors and comparisons — matplotlib figures for the app, the notebooks and ``compare``.

Every function takes plain data (a run as returned by :func:`dba.runs.read_run`, lists of such runs, a
:class:`~dba.global_gradient.GlobalGradient`, rows of a results table), returns a :class:`matplotlib.figure.Figure`,
and with ``path=`` also writes a PNG there atomically (temp file beside it, then rename).

Figures are built with ``Figure()`` directly — no ``pyplot`` and no global backend or rcParams change — so they are
safe to draw from the app's worker threads and do not disturb a notebook's own matplotlib setup. (In a notebook,
a Figure shows inline once the inline backend is active, e.g. after ``%matplotlib inline`` or importing pyplot;
``display(fig)`` then works.)

The app draws these while a run is in progress, so every function copes with missing data: no runs, no evaluations
yet, a step record without a loss, a score that is ``None``. An empty panel carries a short note saying what is
missing instead of raising.

Colours are fixed per method so a method looks the same in every figure (:mod:`.colors`, from the method table
:data:`dba.methods.METHODS`): ``direct`` red, ``mixture`` blues (darker for a larger general share r), ``dba`` green,
every other method a colour of its own, the base model grey. No formula lives here: λ = f(ρ) comes from :func:`dba.optim.step_scale`
and the iso-S curves from :func:`dba.scores.harmonic_mean`.

One module per subject: :mod:`.scores` (S_G / S_D and the held-out NLL over steps, the score plane), :mod:`.dynamics` (ρ, λ, γ, lr, losses,
the live dashboard), :mod:`.dc` (the DC function), :mod:`.anchor` (the anchor spectrum), :mod:`.bars` (scores and
cost per run), :mod:`.plane` (the forgetting plane: end points with intervals, WiSE-FT and mixture curves, the Pareto
front, cost), :mod:`.colors` (colours and labels). Every score is drawn with its 95 % interval where the data carry
one (bands over steps, whiskers on bars and points). Every public name is importable from ``dba.plots``.
"""
from ._common import NO_EVALS, NO_STEPS, PNG_DPI, save_figure
from .anchor import spectrum
from .bars import score_bars
from .colors import _as_runs, method_color, method_kind, method_name, run_label
from .dc import dc_function, dc_presets
from .dynamics import live_dashboard, loss_curves, similarity_and_scale
from .plane import forgetting_plane, pareto_front, plane_points
from .scores import nll_over_steps, score_plane, scores_over_steps

__all__ = [
    "scores_over_steps", "nll_over_steps", "score_plane", "similarity_and_scale", "dc_function", "dc_presets", "loss_curves",
    "spectrum", "score_bars", "forgetting_plane", "pareto_front", "plane_points", "live_dashboard", "run_label", "method_color", "method_kind", "method_name",
    "save_figure", "PNG_DPI", "NO_EVALS", "NO_STEPS", "_as_runs",
]
