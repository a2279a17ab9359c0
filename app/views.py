"""What the page shows: the job bar, run dicts for :mod:`dba.plots`, figures, tables. Read-only views of jobs and
run folders; every figure comes from :mod:`dba.plots`."""
from __future__ import annotations

import html
import math
from pathlib import Path

from dba import plots

from .jobs import Job, RunTrace

EMPTY_JOB = {"state": "idle"}


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "–"
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def job_bar(job: Job | None) -> str:
    """The always-visible job line: title, state, a progress bar with the current phase and ETA."""
    if job is None:
        return ('<div class="dba-jobbar idle"><span class="dba-dot"></span>No job running. Start one from a tab, or '
                'press <b>Run the lesson</b> to see forgetting.</div>')
    snap = job.snapshot()
    state = snap["state"]
    pct = 100.0 * snap["done"] / snap["total"] if snap["total"] else (100.0 if state == "completed" else 0.0)
    if state == "completed":
        pct = 100.0
    bits = [f"<b>{html.escape(snap['title'])}</b>", f'<span class="dba-state {state}">{state}</span>']
    if state == "queued":
        pos = snap["queue_position"]
        bits.append(f"waiting for the machine (position {pos} in line)" if pos > 0 else "starting")
    else:
        bits.append(html.escape(snap["message"]))
    if snap["total"] and state == "running":
        bits.append(f"{snap['done']}/{snap['total']} {snap['unit']}s")
    if state == "running":
        bits.append(f"elapsed {_fmt_s(snap['elapsed_s'])}")
        if snap["eta_s"] is not None:
            bits.append(f"ETA {_fmt_s(snap['eta_s'])} for this phase")
    elif state in ("completed", "cancelled", "failed"):
        bits.append(f"took {_fmt_s(snap['elapsed_s'])}")
    err = f'<div class="dba-error">⚠ {html.escape(snap["error"])}</div>' if snap["error"] else ""
    return (f'<div class="dba-jobbar {state}"><div class="dba-jobline"><span class="dba-dot"></span>'
            f'{" · ".join(bits)}</div><div class="dba-progress"><div style="width:{pct:.1f}%"></div></div>'
            f"{err}</div>")


def trace_run(trace: RunTrace, job: Job | None = None) -> dict:
    """A live trace as the run dict :mod:`dba.plots` reads (like dba.train.read_run's)."""
    done = trace.steps_done()
    status = "running"
    if job is not None and not job.active:
        status = job.state
    return {"label": trace.label, "dir": trace.run_dir, "config": trace.config,
            "status": {"steps": trace.steps, "step": done, "status": status}, "metrics": list(trace.records)}


def job_runs(job: Job | None) -> list[dict]:
    if job is None:
        return []
    with job.lock:
        return [trace_run(t, job) for t in job.runs]


def _steps(run: dict) -> list[dict]:
    return [m for m in run.get("metrics", []) if m.get("type") == "step"]


def latest_rho(run: dict | None) -> float | None:
    for m in reversed(_steps(run or {})):
        if m.get("rho") is not None and not m.get("skipped"):
            return float(m["rho"])
    return None


def dba_run(runs: list[dict]) -> dict | None:
    """The run whose ρ/λ the page shows: the last DBA-family run, else the last run."""
    for r in reversed(runs):
        if str((r.get("config") or {}).get("method", r.get("label", ""))).startswith("dba"):
            return r
    return runs[-1] if runs else None


def signatures(runs: list[dict], job: Job) -> dict:
    """What each figure depends on, as small comparable values: a figure is redrawn only when its value moved."""
    steps = tuple(len(_steps(r)) for r in runs)
    evals = tuple(sum(1 for m in r.get("metrics", []) if m.get("type") == "eval") for r in runs)
    final = (job.state, bool(job.result.get("summary") or job.result.get("status")))
    return {"loss": steps, "rho": steps, "dc": steps, "scores": evals, "plane": evals, "final": final}


def training_figures(runs: list[dict], want: set[str] | None = None) -> dict:
    """The live figures of the Fine-tune and teaching panels, by name (loss, rho, dc, scores); only those in
    ``want`` (default: all) are drawn."""
    want = {"loss", "rho", "dc", "scores"} if want is None else set(want)
    main = dba_run(runs)
    figs = {}
    if "loss" in want:
        figs["loss"] = plots.loss_curves(runs)
    if "rho" in want:
        figs["rho"] = plots.similarity_and_scale(main or [])
    if "dc" in want:
        dc_cfg = (main or {}).get("config") or None
        figs["dc"] = plots.dc_function(dc_cfg, observed_rho=main if main else None, current_rho=latest_rho(main))
    if "scores" in want:
        figs["scores"] = plots.scores_over_steps(runs)
    return figs


def finetune_md(job: Job, runs: list[dict], show=str) -> str:
    """The Fine-tune tab's status line: run folder (named by ``show``) and, at the end, the scores."""
    md = f"**{html.escape(job.title)}** — {job.state}"
    if runs and runs[-1].get("dir"):
        md += f"  \nrun folder: `{show(runs[-1]['dir'])}`"
    sc = job.result.get("scores") or {}
    if sc:
        names = {"s_g": "S_G", "s_d": "S_D", "s": "S"}
        md += "  \nfinal scores: " + ", ".join(f"{names[k]} {v:.3f}" for k, v in sc.items() if v is not None)
    if job.error:
        md += f"\n\n⚠ {html.escape(job.error)}"
    return md


def plane_figure(runs: list[dict]):
    return plots.score_plane(runs)


def spectrum_figure(anchor):
    return plots.spectrum(anchor)


def anchor_summary_md(summary: dict, path: str | None = None) -> str:
    """The Global gradient tab's numbers."""
    def f(x, spec=".2f"):
        return "–" if x is None else format(x, spec)

    rows = [
        ("space", summary.get("space")),
        ("tensors (matrices)", f"{summary.get('tensors')} ({summary.get('matrices')})"),
        ("general batches / tokens", f"{summary.get('batches')} / {summary.get('tokens')}"),
        ("kept rank (min / mean / max)", f"{summary.get('rank_min')} / {f(summary.get('rank_mean'), '.1f')} / "
                                         f"{summary.get('rank_max')}"),
        ("energy kept (min / mean)", f"{f(summary.get('energy_kept_min'), '.3f')} / "
                                     f"{f(summary.get('energy_kept_mean'), '.3f')}"),
        ("size: dense → stored", f"{f(summary.get('dense_mb'))} MB → {f(summary.get('stored_mb'))} MB "
                                 f"({f(100 * (summary.get('stored_share') or 0), '.1f')} %)"),
        ("time", f"{f(summary.get('seconds'), '.1f')} s"),
    ]
    out = "| global gradient ĝ_G | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    if path:
        out += f"\n\nSaved as `{Path(path).name}`; DBA runs of this session use it."
    return out


def model_summary_md(summary: dict) -> str:
    def n(x):
        return f"{x / 1e6:.1f} M" if x >= 1e6 else f"{x / 1e3:.1f} k"

    rows = [("model", f"{summary['name']}"), ("source", f"`{summary['source']}`"), ("device", summary["device"]),
            ("quantisation", summary["quantization"]), ("training", summary["mode"]),
            ("parameters", n(summary["parameters"])),
            ("trainable", f"{n(summary['trainable_parameters'])} ({100 * summary['trainable_share']:.2f} %)"),
            ("memory (weights)", f"{summary['memory_mb']:.0f} MB"), ("load time", f"{summary['load_seconds']} s")]
    return "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def compare_outputs(folder: str | Path):
    """Results table, plots and cost lines of a compare output folder (finished, cancelled or still running)."""
    import pandas as pd

    from dba.compare import load_runs

    folder = Path(folder)
    csv_path = folder / "results.csv"
    table = pd.read_csv(csv_path) if csv_path.exists() else pd.DataFrame()
    runs = load_runs(folder) if (folder / "compare.json").exists() else []
    shown = [c for c in ("method", "label", "ratio", "status", "s_d", "s_g", "s", "d_s_d", "d_s_g", "d_s", "tokens",
                         "wall_seconds", "device_seconds") if c in table.columns]
    table = table[shown] if shown else table
    bars = plots.score_bars(csv_path if csv_path.exists() else [])
    plane = plots.score_plane(runs)
    over = plots.scores_over_steps(runs)
    summary = (folder / "summary.md").read_text(encoding="utf-8") if (folder / "summary.md").exists() else ""
    return table.round(3) if len(table) else table, bars, plane, over, summary


def is_compare_folder(path: Path) -> bool:
    return (path / "results.csv").exists() or (path / "compare.json").exists()
