"""Teaching mode: the narration shown while the "see forgetting" preset runs, and its closing summary.

The numbers in the summary are read from the runs' evaluation records; differences are taken with
:func:`dba.scores.delta`. Nothing is tuned to make DBA look good: when direct fine-tuning did not forget, or DBA did
not help, the summary says so.
"""
from __future__ import annotations

from dba.scores import Scores, delta
from dba.train import read_run

INTRO = (
    "### What this shows\n"
    "We fine-tune **{model}** on the **{domain}** domain twice — same data, same order, same seed, {steps} steps: "
    "once the usual way (**direct**: domain data only) and once with **DBA**. Before, during and after each run the "
    "model takes two small quizzes: general questions (**S_G**, what it should *keep*) and {domain} questions "
    "(**S_D**, what it should *learn*). **S** is their harmonic mean: high only when both are high."
)
ANCHOR = (
    "**Step 1 — the global gradient ĝ_G.** One pass over general text with the learning rate at zero: the weights "
    "do not move, we only average the gradient. ĝ_G points the way the *general* loss falls — DBA uses it as a "
    "compass while it trains on the domain. It is computed once per model and reused for every domain."
)
ANCHOR_REUSED = (
    "**Step 1 — the global gradient ĝ_G** was already computed for this model in this session, so it is reused: "
    "that is the idea — compute it once, reuse it for every domain."
)
DIRECT = (
    "**Step 2 — direct fine-tuning** (red). Domain data only. Watch the **loss** fall (the model learns the domain) "
    "and the **S_G** panel: a drop below the dotted base line is *catastrophic forgetting*. ρ and λ stay empty — "
    "direct fine-tuning never looks at ĝ_G."
)
DBA = (
    "**Step 3 — DBA** (green). The same data and steps. At every step: **ρ_t** = cos(g_D, ĝ_G) says whether the "
    "domain step agrees with general knowledge (ρ < 0: they conflict); the **boost** mixes ĝ_G into the step with a "
    "weight γ_t that decays over the run; the **DC curve** turns ρ into a step multiplier λ (the black dot is the "
    "current ρ); and the learning rate **anneals** towards zero. Compare the green S_G curve with the red one."
)

READING_GUIDE = """### How to read the plots
- **S_G and S_D over steps** — the two quizzes at each evaluation. The dotted line is the base model. Learning the
  domain is S_D going *up*; forgetting is S_G going *down*.
- **Training loss** — the domain loss. Both methods should learn; DBA often a little more slowly at first.
- **ρ and λ** (DBA only) — ρ_t near +1: the domain step also helps general knowledge; near 0: unrelated; below 0: it
  would hurt it. λ_t is the step multiplier that dynamic correction picks from ρ_t.
- **The DC curve** — the rule λ = f(ρ) itself; the ticks on the axis are the ρ seen so far, the dot is the latest.
- **The score plane** — each run is a path from the base model (★). Right is better at the domain, up is better at
  general questions; the grey curves join points of equal S. A good fine-tune moves *right without going down*.
"""


def _evals(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("type") == "eval"]


def _scores(rec: dict | None) -> Scores | None:
    if rec is None:
        return None
    return Scores(s_g=rec.get("s_g"), s_d=rec.get("s_d"), s=rec.get("s"), detail=rec.get("detail") or {})


def _pts(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.0f} points"


def _val(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _items(rec: dict | None) -> int:
    detail = (rec or {}).get("detail") or {}
    ns = [d.get("n") for d in (detail.get("general"), detail.get("domain")) if isinstance(d, dict) and d.get("n")]
    return min(ns) if ns else 0


def summarise(traces, anchor_seconds: float, total_seconds: float, anchor_reused: bool = False) -> dict:
    """The closing narration ("what happened") and its numbers, from the direct and dba traces of a teaching job."""
    by = {t.method: t for t in traces}
    base_rec = next((e for t in traces for e in _evals(t.records) if e.get("step") == 0), None)
    base = _scores(base_rec)
    numbers: dict = {"base": None if base is None else {"s_g": base.s_g, "s_d": base.s_d, "s": base.s}}
    lines = ["### What happened"]
    if base is not None:
        lines.append(f"- **Base model**: S_G {_val(base.s_g)}, S_D {_val(base.s_d)}, S {_val(base.s)}")
    finals = {}
    for method in ("direct", "dba"):
        t = by.get(method)
        ev = _evals(t.records) if t else []
        last = _scores(ev[-1]) if ev else None
        if last is None:
            continue
        d = delta(last, base) if base is not None else {"s_g": None, "s_d": None, "s": None}
        finals[method] = (last, d)
        try:
            wall = (read_run(t.run_dir).get("status") or {}).get("wall_seconds")
        except Exception:  # a run folder that went away: the numbers above still stand
            wall = None
        numbers[method] = {"s_g": last.s_g, "s_d": last.s_d, "s": last.s, "delta": d, "wall_seconds": wall}
        lines.append(f"- **{method}**: S_G {_val(last.s_g)} ({_pts(d['s_g'])}), S_D {_val(last.s_d)} "
                     f"({_pts(d['s_d'])}), S {_val(last.s)}" + (f" — {wall:.0f} s" if wall else ""))
    n = _items(base_rec)
    one = 1.0 / n if n else 0.0  # a change smaller than one question is no change
    if "direct" in finals and finals["direct"][1]["s_g"] is not None:
        drop = -finals["direct"][1]["s_g"]
        if drop > one:
            lines.append(f"\n**Direct fine-tuning forgot**: its general score fell by {100 * drop:.0f} points.")
        else:
            lines.append("\n**Direct fine-tuning did not forget here** (its general score did not fall by more than "
                         "one question). Short, gentle runs on small data often don't — try more steps or a higher "
                         "learning rate in the Fine-tune tab, or the Compare tab's sweep.")
    if "direct" in finals and "dba" in finals:
        (sd, _), (sb, _) = finals["direct"], finals["dba"]
        if sd.s_g is not None and sb.s_g is not None:
            gap = sb.s_g - sd.s_g
            if gap > one:
                lines.append(f"**DBA kept more general knowledge**: S_G {100 * gap:.0f} points above direct.")
            elif gap < -one:
                lines.append(f"**DBA kept less general knowledge than direct** in this run ({100 * gap:.0f} points).")
            else:
                lines.append("DBA and direct ended with about the same general score.")
        if sd.s is not None and sb.s is not None:
            lines.append(f"Joint score S: direct {_val(sd.s)}, DBA {_val(sb.s)}.")
    if anchor_reused:
        lines.append(f"\nCost: ĝ_G was reused from earlier in this session (no extra pass); the whole lesson took "
                     f"{total_seconds:.0f} s.")
    else:
        lines.append(f"\nCost: the global gradient took {anchor_seconds:.0f} s (once per model, reused for every "
                     f"domain); the whole lesson took {total_seconds:.0f} s.")
    if n:
        lines.append(f"\n*One run, one seed, {n} questions per quiz: a difference of one question is "
                     f"{100 / n:.0f} points. Treat small gaps as noise; the Compare tab runs the full experiment.*")
    return {"text": "\n".join(lines), "numbers": numbers}
