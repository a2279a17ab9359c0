"""WiSE-FT rows of a comparison: every finished run's interpolation with the base model, θ_α = (1 − α)·θ_0 + α·θ_ft
(:mod:`dba.wiseft`), scored at the comparison's α values (``CompareConfig.wiseft``). No training: the cost of a
WiSE-FT point is the time to score it (plus, for a full fine-tune, a share of reading the base weights θ_0 once).

Each run folder gets ``wiseft.json``: ``[{"alpha", "s_g", "s_d", "s", "ci", "n", "detail", "seconds"}, ...]``, one
evaluation record per α (the same shape as a metrics.jsonl "eval" record), written atomically after the run's final
evaluation; a resumed comparison scores only the α values missing from it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..io import atomic_write_json

WISEFT_FILE = "wiseft.json"


def wiseft_label(label: str, alpha: float) -> str:
    """The results row of run ``label`` interpolated at ``alpha``: ``dba+wiseft-0.5``."""
    return f"{label}+wiseft-{alpha:g}"


def parent_label(label: str) -> str | None:
    """``dba+wiseft-0.5`` -> ``dba``; None for a label that is no WiSE-FT row."""
    return label.split("+wiseft-")[0] if "+wiseft-" in str(label) else None


def read_wiseft(run_dir: str | Path) -> list[dict]:
    """The WiSE-FT records of a run folder (empty when it has none)."""
    f = Path(run_dir) / WISEFT_FILE
    if not f.exists():
        return []
    try:
        recs = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    return [r for r in recs if isinstance(r, dict) and r.get("alpha") is not None] if isinstance(recs, list) else []


def missing_alphas(run_dir: str | Path, alphas) -> list[float]:
    have = {round(float(r["alpha"]), 9) for r in read_wiseft(run_dir)}
    return [a for a in alphas if round(float(a), 9) not in have]


def _base_state(ft, model) -> tuple[dict, float]:
    """θ_0 of a full fine-tune's trainable parameters (read from the base model, on CPU) and the seconds it took."""
    from ..models import load_model

    t0 = time.perf_counter()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    base = load_model(ft.model, quantization="none", lora=None, device="cpu", dtype=ft.dtype,
                      trust_remote_code=ft.trust_remote_code)
    state = {n: p.detach().clone() for n, p in base.model.named_parameters() if n in names}
    del base
    return state, time.perf_counter() - t0


def score_wiseft(model, tokenizer, sets, ft, run_dir: Path, alphas) -> list[dict]:
    """Score ``model`` (the finished run, LoRA or full) interpolated at every α not yet in ``run_dir/wiseft.json``;
    appends the records there and returns all of them."""
    from ..global_gradient import lora_layers
    from ..train import evaluate_model
    from ..wiseft import interpolated

    todo = missing_alphas(run_dir, alphas)
    recs = read_wiseft(run_dir)
    if not todo:
        return recs
    base_state, load_s = (None, 0.0) if lora_layers(model) else _base_state(ft, model)
    gen_eval, dom_eval = sets
    for a in todo:
        t0 = time.perf_counter()
        with interpolated(model, a, base_state) as m:
            rec = evaluate_model(m, tokenizer, gen_eval, dom_eval, ft)
        seconds = time.perf_counter() - t0 + load_s / len(todo)
        recs.append({"type": "wiseft", "alpha": float(a), **rec, "seconds": round(seconds, 3)})
        atomic_write_json(Path(run_dir) / WISEFT_FILE, sorted(recs, key=lambda r: r["alpha"]))
    return sorted(recs, key=lambda r: r["alpha"])


def score_wiseft_of_folder(run_dir: Path, sets, ft, alphas, device: str = "auto") -> list[dict]:
    """:func:`score_wiseft` for a run finished earlier (a resumed comparison): the run is loaded from its folder."""
    from ..runs import load_trained

    if not missing_alphas(run_dir, alphas):
        return read_wiseft(run_dir)
    lm = load_trained(run_dir, device=device)
    return score_wiseft(lm.model, lm.tokenizer, sets, ft, run_dir, alphas)
