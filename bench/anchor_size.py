"""(b) Anchor size, dense vs stored, and the energy kept, for several energies and ranks.

Computed from the singular values of every dense per-layer estimate (``GlobalGradient.spectra``) with the library's
own rank rule (:func:`dba.global_gradient.choose_rank`), so one estimate gives every row; stored floats per matrix
= (m + n)·k for the factors US (m × k) and V (n × k), vectors dense. The last row is the diagonal Fisher the same
pass stores for EWC (Adafactor row and column sums: m + n floats per matrix, vectors dense).
"""
from __future__ import annotations

import torch

from dba.global_gradient import GlobalGradient, choose_rank, choose_ranks_total

from .common import table

ENERGIES = (0.5, 0.8, 0.9, 0.95, 0.99)
RANKS = (1, 4, 16, 64, 256)


GLOBAL_ENERGIES = (0.8, 0.9, 0.95)


def rows_for(anchor: GlobalGradient, energies=ENERGIES, ranks=RANKS) -> tuple[list[list], float]:
    shapes = {n: anchor.shape(n) for n in anchor.names()}
    dense = sum(torch.Size(s).numel() for s in shapes.values())
    vectors = sum(torch.Size(s).numel() for n, s in shapes.items() if n not in anchor.spectra)
    settings = [("energy", e) for e in energies] + [("rank", r) for r in ranks] + \
        [("total", e) for e in GLOBAL_ENERGIES]
    rows = []
    for kind, value in settings:
        chosen = choose_ranks_total(anchor.spectra, shapes, value) if kind == "total" else None
        stored, ks, kept, kept_e, all_e = vectors, [], [], 0.0, 0.0
        for name, s in anchor.spectra.items():
            m, n = shapes[name]
            k = chosen[name] if chosen else \
                choose_rank(s, value if kind == "rank" else None, value if kind == "energy" else None)
            e = s.double() ** 2
            ks.append(k)
            kept.append(float(e[:k].sum() / e.sum()) if e.sum() > 0 else 1.0)
            kept_e += float(e[:k].sum())
            all_e += float(e.sum())
            stored += (m + n) * k
        label = {"energy": f"energy {value:g} per matrix (library rule)", "rank": f"rank {value}",
                 "total": f"energy {value:g} of the total (global allocation)"}[kind]
        rows.append([label, min(ks), sum(ks) / len(ks), max(ks), stored * 4 / 2**20, stored / dense, min(kept),
                     sum(kept) / len(kept), kept_e / all_e if all_e > 0 else 1.0])
    return rows, dense * 4 / 2**20


def fisher_row(anchor: GlobalGradient, columns: int) -> list | None:
    """The Fisher's row for the table: stored MB and its share of the dense anchor's size (None without a Fisher)."""
    if not anchor.has_fisher():
        return None
    s = anchor.summary()
    row = ["diagonal Fisher (EWC; Adafactor row/col factors)", "–", "–", "–", s["fisher_mb"],
           s["fisher_mb"] / s["dense_mb"]]
    return row + ["–"] * (columns - len(row))


def run(bm_spec: str, anchor: GlobalGradient, anchor_info: dict) -> tuple[str, dict]:
    if anchor.meta.get("streaming"):
        s = anchor.summary()
        rows = [[f"streaming r={anchor.meta.get('rank')}, p={anchor.meta.get('oversample')}", s["rank_min"],
                 s["rank_mean"], s["rank_max"], s["stored_mb"], s["stored_share"], s["energy_kept_min"],
                 s["energy_kept_mean"]]]
        rows += [r for r in [fisher_row(anchor, 8)] if r]
        out = table(f"(b) Anchor size — {bm_spec} (streaming: energies are estimates from the sketch)",
                    ["setting", "rank min", "rank mean", "rank max", "stored MB", "stored / dense",
                     "energy kept min", "energy kept mean"], rows,
                    note=f"Dense would be {s['dense_mb']:.0f} MB (fp32).")
        return out, {"rows": rows}
    if not anchor.spectra:
        return "(b) skipped: the anchor was stored dense (no spectra); use --energy or --rank.\n", {}
    rows, dense_mb = rows_for(anchor)
    per = next(r for r in rows if r[0].startswith("energy 0.9 per matrix"))
    tot = next(r for r in rows if r[0].startswith("energy 0.9 of the total"))
    rows += [r for r in [fisher_row(anchor, 9)] if r]
    out = table(f"(b) Anchor size vs rank/energy — {bm_spec}, {anchor.meta.get('batches')} general batches, "
                f"{anchor.meta.get('tokens')} tokens, {len(anchor.spectra)} matrices",
                ["setting", "rank min", "rank mean", "rank max", "stored MB", "stored / dense",
                 "energy kept, min over matrices", "mean over matrices", "of the total Σ‖Ĝ_l‖²"], rows,
                note=f"Dense anchor: {dense_mb:.1f} MB (fp32). Target: stored ≤ 5% of dense at ≥ 90% energy — "
                     f"with the library's per-matrix rule: {'met' if per[5] <= 0.05 else 'NOT met'} "
                     f"({per[5]:.2%}, ranks {per[1]}–{per[3]}, mean {per[2]:.1f}); 90% of the total energy with a "
                     f"global allocation: {'met' if tot[5] <= 0.05 else 'NOT met'} ({tot[5]:.2%}, ranks "
                     f"{tot[1]}–{tot[3]}, mean {tot[2]:.1f}).")
    return out, {"rows": rows, "dense_mb": dense_mb}
