"""The global gradient's spectrum: singular values and energy kept per matrix."""
from __future__ import annotations

import re

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._common import _finish, _legend, _new_figure, _note, _tidy
from .colors import _num


def _short_name(name: str) -> str:
    """model.layers.3.self_attn.q_proj -> L3 self_attn.q_proj"""
    m = re.search(r"layers?\.(\d+)\.(.*)$", name)
    if m:
        return f"L{m.group(1)} {m.group(2)}"
    return name.split("model.")[-1]


def _pick_evenly(names: list[str], k: int) -> list[str]:
    if len(names) <= k:
        return names
    idx = np.unique(np.round(np.linspace(0, len(names) - 1, k)).astype(int))
    return [names[i] for i in idx]


def spectrum(global_gradient, path=None, max_layers: int = 8) -> Figure:
    """The anchor's compression: normalised singular values σ_i/σ_1 (log scale) of up to ``max_layers`` matrices
    spread over the model, each with its kept rank marked (left), and the share of Frobenius energy kept per matrix
    (right, with the target energy when the anchor was compressed by energy). The title gives dense vs stored size."""
    g = global_gradient
    fig = _new_figure(12, 4.8)
    ax, ax_e = fig.subplots(1, 2, width_ratios=[1.6, 1])
    if g is None:
        for a in (ax, ax_e):
            _note(a, "no global gradient yet")
        fig.suptitle("Global gradient spectrum")
        return _finish(fig, path)
    spectra = {n: np.asarray(s.detach().float().cpu().numpy() if hasattr(s, "detach") else s, dtype=float)
               for n, s in (g.spectra or {}).items()}
    names = _pick_evenly([n for n, s in spectra.items() if s.size and s[0] > 0], max(1, int(max_layers)))
    cmap = colormaps["viridis"]
    for i, name in enumerate(names):
        s = spectra[name] / spectra[name][0]
        c = to_hex(cmap(i / max(len(names) - 1, 1) * 0.9))
        ks = np.arange(1, len(s) + 1)
        ax.plot(ks, np.maximum(s, 1e-12), color=c, linewidth=1.4, label=_short_name(name), gid=f"spectrum:{name}")
        if name in g.factors:
            k = int(g.factors[name][0].shape[1])
            ax.plot([k], [max(s[k - 1], 1e-12)], marker="o", markersize=7, markerfacecolor="white",
                    markeredgecolor=c, markeredgewidth=1.8, linewidth=0, gid=f"rank:{name}")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index i")
    ax.set_ylabel(r"$\sigma_i / \sigma_1$ (log scale)")
    ax.set_title("Singular values of $\\hat G$ per matrix (○ = kept rank)")
    _tidy(ax)
    if names:
        ax.legend(fontsize=7, frameon=False, loc="upper right", ncol=2 if len(names) > 4 else 1)
    else:
        _note(ax, "no SVD spectra stored (anchor kept dense)")

    energies = np.asarray([v for n, v in (g.energy_kept or {}).items() if n in g.factors], dtype=float)
    summ = g.summary()
    if len(energies):
        lo = min(float(energies.min()), float((g.meta or {}).get("energy") or 1.0))
        bins = np.linspace(max(0.0, lo - 0.02), 1.0, 21)
        ax_e.hist(energies, bins=bins, color="#4c72b0", edgecolor="white", gid="energy-hist")
        target = _num((g.meta or {}).get("energy"))
        if target is not None:
            ax_e.axvline(target, color="#c44e52", linestyle="--", linewidth=1.4, label=f"target energy {target:g}",
                         gid="energy-target")
        ranks = f"rank {summ['rank_min']}–{summ['rank_max']} (mean {summ['rank_mean']:.1f})"
        ax_e.set_title(f"Energy kept by the stored rank\n{len(energies)} matrices · {ranks} · "
                       f"mean {energies.mean():.1%}", fontsize=10)
        ax_e.yaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(ax_e, loc="upper left")
    else:
        _note(ax_e, "no compressed matrices")
        ax_e.set_title("Energy kept by the stored rank")
    ax_e.set_xlabel("share of Frobenius energy ‖Ĝ‖² kept")
    ax_e.set_ylabel("matrices")
    _tidy(ax_e)
    fig.suptitle(f"Global gradient ({summ['space']} space, {summ['tensors']} tensors): "
                 f"{summ['dense_mb']:.2f} MB dense → {summ['stored_mb']:.2f} MB stored "
                 f"({summ['stored_share']:.1%})", fontsize=12)
    return _finish(fig, path)

