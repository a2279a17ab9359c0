"""The DC step multiplier λ = f(ρ) (computed by dba.optim.step_scale), with observed ρ values."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import fields, is_dataclass
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from ..errors import DBAError
from ._common import _finish, _legend, _new_figure, _records, _series, _step_records, _tidy
from .colors import _num


def dc_presets() -> "OrderedDict[str, Any]":
    """The built-in DC functions side by side: paper (the default reconstruction), conservative, off."""
    from ..optim import CorrectionConfig

    return OrderedDict(paper=CorrectionConfig(), conservative=CorrectionConfig(function="conservative"),
                       off=CorrectionConfig(function="off"))


def _correction_from(obj):
    """A CorrectionConfig from a CorrectionConfig, DBAConfig, FinetuneConfig, or their dicts (config.json)."""
    from ..optim import CorrectionConfig

    if obj is None:
        return CorrectionConfig()
    if isinstance(obj, CorrectionConfig):
        return obj
    if hasattr(obj, "correction"):          # DBAConfig
        return obj.correction
    if hasattr(obj, "dba") and hasattr(obj.dba, "correction"):  # FinetuneConfig
        return obj.dba.correction
    if isinstance(obj, Mapping):
        if "config" in obj and isinstance(obj["config"], Mapping):   # a run dict
            return _correction_from(obj["config"])
        if "dba" in obj:
            return _correction_from(obj["dba"] or {})
        if "correction" in obj:
            return _correction_from(obj["correction"] or {})
        known = {f.name for f in fields(CorrectionConfig)}
        return CorrectionConfig(**{k: v for k, v in obj.items() if k in known})
    raise DBAError(f"Cannot read a DC config from {type(obj).__name__}.")


def _correction_label(cfg) -> str:
    f = cfg.function if not callable(cfg.function) else getattr(cfg.function, "__name__", "custom")
    if not cfg.enabled or f == "off":
        return "off (λ = 1)"
    return f"{f} (β={cfg.beta:g}, λ∈[{cfg.lam_min:g}, {cfg.lam_max:g}])"


def _named_corrections(correction_config) -> list[tuple[str, Any]]:
    from ..optim import CorrectionConfig

    if isinstance(correction_config, Mapping) and correction_config and all(
            isinstance(v, (CorrectionConfig, Mapping)) or is_dataclass(v) for v in correction_config.values()) \
            and not ({"config", "dba", "correction"} & set(correction_config)) \
            and not ({f.name for f in fields(CorrectionConfig)} & set(correction_config)):
        return [(str(k), _correction_from(v)) for k, v in correction_config.items()]
    if isinstance(correction_config, (list, tuple)):
        cfgs = [_correction_from(c) for c in correction_config]
        return [(_correction_label(c), c) for c in cfgs]
    cfg = _correction_from(correction_config)
    return [(_correction_label(cfg), cfg)]


_DC_LINE_COLORS = ["#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e"]


def dc_function(correction_config=None, observed_rho=None, current_rho=None, path=None) -> Figure:
    """The DC step multiplier λ = f(ρ) over ρ ∈ [−1, 1], computed by :func:`dba.optim.step_scale`.

    - ``correction_config``: a CorrectionConfig (default: the paper reconstruction), a DBAConfig / FinetuneConfig /
      run dict / config.json dict, a list of configs, or a dict ``{name: config}`` to overlay several (see
      :func:`dc_presets`).
    - ``observed_rho``: the ρ_t seen so far (a list of floats, or a run / step records to read them from), drawn as a
      rug along the x axis.
    - ``current_rho``: the latest ρ_t, marked on the (first) curve.
    """
    from ..optim import step_scale

    named = _named_corrections(correction_config)
    fig = _new_figure(7.5, 4.6)
    ax = fig.subplots()
    rho = np.linspace(-1.0, 1.0, 401)
    ax.axvspan(-1.0, 0.0, color="#d62728", alpha=0.04, zorder=0)
    ax.axvspan(0.0, 1.0, color="#2ca02c", alpha=0.04, zorder=0)
    ax.axhline(1.0, color="#aaaaaa", linewidth=0.8, linestyle="--", gid="lambda=1")
    first = None
    for i, (name, cfg) in enumerate(named):
        try:
            lam = np.asarray([step_scale(float(r), cfg) for r in rho])
        except DBAError as e:  # e.g. a custom callable saved by name only in config.json
            ax.text(0.02, 0.95 - 0.07 * i, f"{name}: {e}", transform=ax.transAxes, fontsize=8, color="#aa0000")
            continue
        ax.plot(rho, lam, color=_DC_LINE_COLORS[i % len(_DC_LINE_COLORS)], linewidth=2.0 if i == 0 else 1.5,
                linestyle="-" if i == 0 else ["--", "-.", ":"][(i - 1) % 3], label=name, gid=f"dc:{name}")
        if first is None:
            first = cfg
    if observed_rho is not None and not isinstance(observed_rho, (list, tuple, np.ndarray)):
        observed_rho = _series(_step_records(_records(observed_rho)), "rho")[1]
    obs = np.asarray([v for v in (_num(x) for x in (observed_rho if observed_rho is not None else [])) if v is not None])
    if len(obs):
        ax.vlines(obs, 0.0, 0.06, transform=ax.get_xaxis_transform(), color="#1f77b4",
                  alpha=max(0.08, min(0.8, 8.0 / len(obs))), linewidth=1.0, gid="rug",
                  label=f"observed $\\rho_t$ ({len(obs)} steps)")
    cur = _num(current_rho)
    if cur is not None and first is not None:
        lam_c = step_scale(cur, first)
        ax.axvline(cur, color="#222222", linewidth=0.8, linestyle=":")
        ax.plot([cur], [lam_c], marker="o", markersize=9, color="#222222", markeredgecolor="white", linewidth=0,
                zorder=5, gid="current")
        ax.annotate(f"now: ρ={cur:+.2f}, λ={lam_c:.2f}", (cur, lam_c), textcoords="offset points",
                    xytext=(8 if cur < 0.4 else -8, 10), ha="left" if cur < 0.4 else "right", fontsize=9)
    sim = first.similarity if first is not None else "cosine"
    ax.set_xlabel(r"$\rho$ = cos($g_D$, $\hat g_G$)" if sim == "cosine"
                  else r"$\rho$ = $\langle g_D, \hat g_G\rangle / \|\hat g_G\|^2$")
    ax.set_ylabel(r"$\lambda = f(\rho)$  (step multiplier, × learning rate)")
    ax.set_xlim(-1.0, 1.0)
    lo = min([line.get_ydata().min() for line in ax.get_lines() if (line.get_gid() or "").startswith("dc:")],
             default=0.5)
    hi = max([line.get_ydata().max() for line in ax.get_lines() if (line.get_gid() or "").startswith("dc:")],
             default=2.0)
    ax.set_ylim(min(lo, 1.0) - 0.15, max(hi, 1.0) + 0.15)
    ax.text(0.02, 0.97, "gradients conflict", transform=ax.transAxes, fontsize=8, color="#a33", va="top")
    ax.text(0.98, 0.97, "gradients agree", transform=ax.transAxes, fontsize=8, color="#383", va="top", ha="right")
    ax.set_title("Dynamic correction: step multiplier vs gradient similarity")
    _tidy(ax)
    _legend(ax, loc="lower left" if cur is None or cur > -0.3 else "lower right")
    return _finish(fig, path)

