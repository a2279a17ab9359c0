"""dba.plots: every figure draws the data it is given, saves a PNG atomically, and copes with missing data.

Synthetic runs only (no model); the anchor is built by hand from dba.global_gradient.compress on random matrices.
Set DBA_PLOTS_DEMO=/some/dir to also keep the PNGs there for a look.
"""
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from dba import plots
from dba.errors import DBAError
from dba.global_gradient import GlobalGradient, compress
from dba.optim import CorrectionConfig, DBAConfig, step_scale
from dba.scores import harmonic_mean


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic data


def synthetic_run(method="dba", steps=40, ratio=None, seed=0, eval_every=10, drift=0.0, gain=0.45, label=None, status="completed",
                  done=None, boost=True, correction=True):
    """A run dict shaped like dba.train.read_run's: config, status and metrics.jsonl records."""
    rng = np.random.default_rng(seed)
    done = steps if done is None else done
    dba_cfg = DBAConfig(total_steps=steps).to_dict()
    dba_cfg["boost"]["enabled"] = boost
    dba_cfg["correction"]["enabled"] = correction
    cfg = {"method": method, "steps": steps, "seed": seed, "dba": dba_cfg}
    if ratio is not None:
        cfg["mixture_ratio"] = ratio
    metrics = [{"type": "eval", "step": 0, "s_g": 0.60, "s_d": 0.30, "s": harmonic_mean(0.30, 0.60), "detail": {}}]
    has_anchor = method == "dba"
    for t in range(done):
        x = t / steps
        rho = float(np.clip(-0.1 + 0.3 * rng.standard_normal(), -1, 1)) if has_anchor else 0.0
        lam = step_scale(rho, CorrectionConfig(enabled=has_anchor and correction))
        lr = 1e-4 * 0.5 * (1 + math.cos(math.pi * x))
        metrics.append({"type": "step", "step": t, "loss": float(2.8 * math.exp(-4 * x) + 0.05 + 0.1 * rng.random()),
                        "grad_norm": 1.0, "anchor_norm": 0.5 if has_anchor else 0.0, "rho": rho,
                        "gamma": 0.1 * (1 - x) if has_anchor and boost else 0.0, "lam": lam, "lr": lr,
                        "effective_lr": lr * lam, "tokens": 1000 * (t + 1), "elapsed": 0.1 * t, "skipped": False})
        if eval_every and (t + 1) % eval_every == 0:
            k = (t + 1) / steps
            s_g, s_d = 0.60 - drift * k, 0.30 + gain * k + 0.02 * rng.standard_normal()
            metrics.append({"type": "eval", "step": t + 1, "s_g": s_g, "s_d": s_d, "s": harmonic_mean(s_g, s_d),
                            "detail": {}})
    run = {"dir": f"/tmp/runs/{method}", "config": cfg,
           "status": {"status": status, "step": done, "steps": steps}, "metrics": metrics}
    if label:
        run["label"] = label
    return run


def synthetic_runs():
    return [synthetic_run("direct", drift=0.25, gain=0.50, seed=1),
            synthetic_run("mixture", ratio=0.3, drift=0.12, gain=0.40, seed=2),
            synthetic_run("mixture", ratio=0.7, drift=0.05, gain=0.22, seed=3),
            synthetic_run("dba", drift=0.03, gain=0.45, seed=4),
            synthetic_run("dba", drift=0.10, gain=0.47, seed=5, correction=False)]


@pytest.fixture(scope="module")
def anchor():
    torch.manual_seed(0)
    g = GlobalGradient(space="weight", meta={"energy": 0.9, "batches": 4, "tokens": 999})
    for layer in range(3):
        for proj, shape in (("q_proj", (48, 32)), ("v_proj", (16, 32))):
            # low-rank signal plus noise, so the spectrum has a visible knee
            m = torch.randn(shape[0], 4) @ torch.randn(4, shape[1]) + 0.1 * torch.randn(*shape)
            name = f"model.layers.{layer}.self_attn.{proj}"
            us, v, s, kept = compress(m, energy=0.9)
            g.factors[name], g.spectra[name], g.energy_kept[name] = (us, v), s, kept
    g.dense["model.norm.weight"] = torch.randn(32)
    g.energy_kept["model.norm.weight"] = 1.0
    return g


def results_rows():
    rows = [{"method": "base", "ratio": "", "s": 0.40, "s_g": 0.60, "s_d": 0.30, "wall_seconds": 0, "tokens": 0},
            {"method": "direct", "ratio": None, "s": 0.55, "s_g": 0.35, "s_d": 0.75, "wall_seconds": 60,
             "device_seconds": 55, "tokens": 40000},
            {"method": "mixture", "ratio": 0.3, "s": 0.62, "s_g": 0.48, "s_d": 0.72, "wall_seconds": 300,
             "device_seconds": 280, "tokens": 200000},
            {"method": "dba", "ratio": None, "s": 0.66, "s_g": 0.57, "s_d": 0.74, "wall_seconds": 80,
             "device_seconds": 70, "tokens": 52000, "seed": 0},
            {"method": "dba", "ratio": None, "s": 0.62, "s_g": 0.55, "s_d": 0.70, "wall_seconds": 82,
             "device_seconds": 72, "tokens": 52000, "seed": 1}]
    return rows


@pytest.fixture()
def out(tmp_path):
    demo = os.environ.get("DBA_PLOTS_DEMO")
    if demo:
        Path(demo).mkdir(parents=True, exist_ok=True)
        return Path(demo)
    return tmp_path


def by_gid(fig, prefix):
    """Every artist in the figure whose gid starts with ``prefix``."""
    return [a for a in fig.findobj(lambda a: (a.get_gid() or "").startswith(prefix))]


def with_gid(fig, gid):
    return [a for a in fig.findobj(lambda a: a.get_gid() == gid)]


def notes(fig):
    return [a.get_text() for a in by_gid(fig, "note")]


def assert_png(path):
    path = Path(path)
    assert path.exists() and path.stat().st_size > 5000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")], "temp file left behind"


# ---------------------------------------------------------------------------------------------------------------------
# Labels and colours


def test_labels_and_colours_follow_the_method():
    runs = plots._as_runs(synthetic_runs())
    assert [r["_label"] for r in runs] == ["direct", "mixture (r=0.3)", "mixture (r=0.7)", "dba", "dba-no-dc"]
    colours = [r["_color"] for r in runs]
    assert len(set(colours)) == len(colours)
    assert plots.method_color("direct") == plots.method_color("direct (seed 2)")
    # one name per ablation, read from the method table (dba.methods.METHODS)
    from dba.methods import METHODS
    assert [plots.method_kind(x) for x in ("dba-no-ggb", "dba-no-al", "dba-projection", "dba-relative",
                                           "mixture-0.125", "dba-no-dc seed 2", "base")] == [
        "dba-no-ggb", "dba-no-al", "dba-projection", "dba-relative", "mixture", "dba-no-dc", "base"]
    named = [plots.method_color(n) for n in METHODS if n != "mixture"]
    assert len(set(named)) == len(named), "every method of the table has a colour of its own"
    assert plots.method_color("mixture-0.75") == plots.method_color("mixture (r=0.75)") != plots.method_color("mixture-0.25")
    assert plots.run_label({"label": "mine", "config": {"method": "dba"}}) == "mine"
    proj = synthetic_run("dba")
    proj["config"]["dba"]["boost"]["mode"] = "projection"
    assert plots.run_label(proj) == "dba-projection"
    with pytest.raises(DBAError, match="read the run folder first"):
        plots.scores_over_steps("runs/some-run")
    # two seeds of one method stay apart in the legend
    twins = plots._as_runs([synthetic_run("direct", seed=1), synthetic_run("direct", seed=2)])
    assert [r["_label"] for r in twins] == ["direct seed 1", "direct seed 2"]


# ---------------------------------------------------------------------------------------------------------------------
# Each figure


def test_scores_over_steps(out):
    runs = synthetic_runs()
    fig = plots.scores_over_steps(runs, path=out / "scores_over_steps.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert_png(out / "scores_over_steps.png")
    for key in ("s_g", "s_d"):
        lines = by_gid(fig, f"{key}:")
        assert len(lines) == len(runs)
        direct = next(ln for ln in lines if ln.get_gid() == f"{key}:direct")
        evals = [m for m in runs[0]["metrics"] if m["type"] == "eval"]
        assert list(direct.get_xdata()) == [m["step"] for m in evals]
        assert np.allclose(direct.get_ydata(), [m[key] for m in evals])
        base = by_gid(fig, f"base:{key}")
        assert len(base) == 1 and np.allclose(base[0].get_ydata(), evals[0][key])  # all runs share one base
    assert not notes(fig)


def test_nll_over_steps(out):
    """The held-out NLL of each eval record, per run, with its interval band; runs without NLL get a note."""
    runs = synthetic_runs()[:2]
    for r, slope in zip(runs, (0.4, 0.1)):
        for m in r["metrics"]:
            if m["type"] == "eval":
                k = m["step"] / 40
                m["nll_g"], m["nll_d"] = 1.5 + slope * k, 2.5 - 0.8 * k
                m["ci"] = {"nll_g": [m["nll_g"] - 0.1, m["nll_g"] + 0.12], "nll_d": [m["nll_d"] - 0.2, m["nll_d"] + 0.2]}
    fig = plots.nll_over_steps(runs, path=out / "nll_over_steps.png")
    assert_png(out / "nll_over_steps.png")
    assert len(fig.axes) == 2 and not notes(fig)
    for key in ("nll_g", "nll_d"):
        evals = [m for m in runs[0]["metrics"] if m["type"] == "eval"]
        (line,) = with_gid(fig, f"{key}:direct")
        assert list(line.get_xdata()) == [m["step"] for m in evals]
        assert np.allclose(line.get_ydata(), [m[key] for m in evals])
        (band,) = with_gid(fig, f"band:{key}:direct")
        ys = band.get_paths()[0].vertices[:, 1]
        assert np.isclose(ys.min(), min(m["ci"][key][0] for m in evals))
        (base,) = by_gid(fig, f"base:{key}")
        assert np.allclose(base.get_ydata(), evals[0][key])
    assert notes(plots.nll_over_steps(synthetic_runs()[:1]))  # no NLL in the records: a note, no error


def test_score_plane(out):
    runs = synthetic_runs()
    fig = plots.score_plane(runs, path=out / "score_plane.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert_png(out / "score_plane.png")
    lines = by_gid(fig, "plane:")
    assert len(lines) == len(runs)
    evals = [m for m in runs[3]["metrics"] if m["type"] == "eval"]
    dba_line = next(ln for ln in lines if ln.get_gid() == "plane:dba")
    assert np.allclose(dba_line.get_xdata(), [m["s_d"] for m in evals])   # x = S_D
    assert np.allclose(dba_line.get_ydata(), [m["s_g"] for m in evals])   # y = S_G
    star = by_gid(fig, "base")
    assert star and star[0].get_marker() == "*" and np.allclose(star[0].get_xydata(), [[0.30, 0.60]])
    assert by_gid(fig, "iso-S")
    # an explicit base wins
    fig2 = plots.score_plane(runs, base={"s_g": 0.5, "s_d": 0.2})
    assert np.allclose(by_gid(fig2, "base")[0].get_xydata(), [[0.2, 0.5]])


def test_similarity_and_scale(out):
    run = synthetic_runs()[3]
    steps = [m for m in run["metrics"] if m["type"] == "step"]
    fig = plots.similarity_and_scale(run, path=out / "similarity_and_scale.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 4   # rho|lam twin on top, gamma|lr twin below
    assert_png(out / "similarity_and_scale.png")
    (lam,) = by_gid(fig, "lam")
    assert np.allclose(lam.get_ydata(), [m["lam"] for m in steps])
    (raw,) = by_gid(fig, "rho-raw")
    assert np.allclose(raw.get_ydata(), [m["rho"] for m in steps])
    (gamma,) = by_gid(fig, "gamma")
    assert np.allclose(gamma.get_ydata(), [m["gamma"] for m in steps])
    (eff,) = by_gid(fig, "effective_lr")
    assert np.allclose(eff.get_ydata(), [m["effective_lr"] for m in steps])
    # the list of step records works the same; records with rho/lam only give the single panel
    fig2 = plots.similarity_and_scale([{"type": "step", "step": t, "rho": 0.1, "lam": 1.4} for t in range(5)])
    assert len(fig2.axes) == 2 and len(by_gid(fig2, "lam")[0].get_ydata()) == 5
    with pytest.raises(DBAError):
        plots.similarity_and_scale(synthetic_runs())


def test_dc_function_calls_step_scale(out):
    cfg = CorrectionConfig()
    observed = [-0.4, -0.1, 0.0, 0.2]
    fig = plots.dc_function(cfg, observed_rho=observed, current_rho=-0.3, path=out / "dc_function.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert_png(out / "dc_function.png")
    (line,) = by_gid(fig, "dc:")
    x, y = line.get_xdata(), line.get_ydata()
    assert x.min() == -1.0 and x.max() == 1.0
    assert np.allclose(y, [step_scale(v, cfg) for v in x])
    (rug,) = by_gid(fig, "rug")
    assert len(rug.get_segments()) == len(observed)
    (cur,) = by_gid(fig, "current")
    assert np.allclose(cur.get_xydata(), [[-0.3, step_scale(-0.3, cfg)]])
    # several presets overlaid, each its own step_scale
    presets = plots.dc_presets()
    fig2 = plots.dc_function(presets, path=out / "dc_presets.png")
    lines = by_gid(fig2, "dc:")
    assert [ln.get_gid() for ln in lines] == [f"dc:{k}" for k in presets]
    for ln, c in zip(lines, presets.values()):
        assert np.allclose(ln.get_ydata(), [step_scale(v, c) for v in ln.get_xdata()])
    # a run dict: its own config and its observed rho
    run = synthetic_runs()[3]
    run["config"]["dba"]["correction"]["beta"] = 0.5
    fig3 = plots.dc_function(run, observed_rho=run)
    (line3,) = by_gid(fig3, "dc:")
    assert np.allclose(line3.get_ydata(), [step_scale(v, CorrectionConfig(beta=0.5)) for v in line3.get_xdata()])
    assert len(by_gid(fig3, "rug")[0].get_segments()) == 40


def test_loss_curves(out):
    runs = synthetic_runs()
    fig = plots.loss_curves(runs, path=out / "loss_curves.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert_png(out / "loss_curves.png")
    assert len(by_gid(fig, "loss-raw:")) == len(runs) and len(by_gid(fig, "loss:")) == len(runs)
    raw = next(ln for ln in by_gid(fig, "loss-raw:") if ln.get_gid() == "loss-raw:direct")
    assert np.allclose(raw.get_ydata(), [m["loss"] for m in runs[0]["metrics"] if m["type"] == "step"])
    smooth = next(ln for ln in by_gid(fig, "loss:") if ln.get_gid() == "loss:direct").get_ydata()
    assert len(smooth) == len(raw.get_ydata()) and np.std(np.diff(smooth)) < np.std(np.diff(raw.get_ydata()))


def test_spectrum(anchor, out):
    fig = plots.spectrum(anchor, path=out / "spectrum.png", max_layers=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert_png(out / "spectrum.png")
    lines = by_gid(fig, "spectrum:")
    assert len(lines) == 4
    for ln in lines:
        name = ln.get_gid().split(":", 1)[1]
        s = anchor.spectra[name].numpy()
        assert np.allclose(ln.get_ydata(), s / s[0], rtol=1e-5)
        (mark,) = by_gid(fig, f"rank:{name}")
        assert mark.get_xdata()[0] == anchor.factors[name][0].shape[1]
    summ = anchor.summary()
    assert f"{summ['dense_mb']:.2f} MB dense" in fig._suptitle.get_text()
    hist = by_gid(fig, "energy-hist")
    assert sum(p.get_height() for p in hist) == len(anchor.factors)


def test_score_bars(out):
    rows = results_rows()
    fig = plots.score_bars(rows, path=out / "score_bars.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert_png(out / "score_bars.png")
    s_bars = with_gid(fig, "bars:s")  # each bar of a bar() call carries its gid
    assert [round(p.get_height(), 6) for p in s_bars] == [0.40, 0.55, 0.62, 0.64]  # two dba seeds averaged
    assert len(with_gid(fig, "bars:s_g")) == 4 and len(with_gid(fig, "bars:s_d")) == 4
    (base,) = by_gid(fig, "base-s")
    assert np.allclose(base.get_ydata(), 0.40)
    cost = with_gid(fig, "cost:device_seconds")
    assert [round(p.get_width(), 6) for p in cost] == [55.0, 280.0, 71.0]   # no cost bar for the base model
    assert fig.findobj(lambda a: a.get_gid() == "err:s")   # the two dba seeds give an error bar
    # a CSV file works too
    import csv
    csv_path = out / "results.csv"
    keys = sorted({k for r in rows for k in r})
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    fig2 = plots.score_bars(csv_path)
    assert [round(p.get_height(), 6) for p in with_gid(fig2, "bars:s")] == [0.40, 0.55, 0.62, 0.64]
    # a cost-only row (as compare adds for the anchor pass) is a cost bar, not an empty slot among the scores
    fig3 = plots.score_bars(rows + [{"method": "anchor", "label": "anchor (amortised)", "device_seconds": 20.0}])
    score_ax, cost_ax = fig3.axes
    assert "anchor (amortised)" not in [t.get_text() for t in score_ax.get_xticklabels()]
    assert len(score_ax.get_xticklabels()) == 4
    assert [round(p.get_width(), 6) for p in with_gid(fig3, "cost:device_seconds")] == [55.0, 280.0, 71.0, 20.0]


def test_live_dashboard_mid_run(out):
    run = synthetic_run("dba", steps=60, done=23, status="running")
    fig = plots.live_dashboard(run, path=out / "live_dashboard.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 4   # loss, rho (+ lam twin), scores
    assert_png(out / "live_dashboard.png")
    assert len(by_gid(fig, "loss:")[0].get_ydata()) == 23
    assert list(by_gid(fig, "live:s_g")[0].get_xdata()) == [0, 10, 20]
    assert "step 23/60" in fig._suptitle.get_text() and "running" in fig._suptitle.get_text()


# ---------------------------------------------------------------------------------------------------------------------
# Missing data: the app draws these while a run starts


def test_empty_inputs_draw_a_note(tmp_path):
    starting = {"dir": "x", "config": {"method": "dba"}, "status": {"status": "running"}, "metrics": []}
    cases = {
        "scores_over_steps": lambda p: plots.scores_over_steps([], path=p),
        "scores_one_run_no_evals": lambda p: plots.scores_over_steps(starting, path=p),
        "score_plane": lambda p: plots.score_plane(None, path=p),
        "similarity_and_scale": lambda p: plots.similarity_and_scale([], path=p),
        "dc_function": lambda p: plots.dc_function(observed_rho=[], path=p),
        "loss_curves": lambda p: plots.loss_curves([starting], path=p),
        "spectrum": lambda p: plots.spectrum(None, path=p),
        "spectrum_dense": lambda p: plots.spectrum(GlobalGradient(space="param", dense={"w": torch.ones(3)},
                                                                  energy_kept={"w": 1.0}), path=p),
        "score_bars": lambda p: plots.score_bars([], path=p),
        "live_dashboard": lambda p: plots.live_dashboard(starting, path=p),
        "live_dashboard_none": lambda p: plots.live_dashboard(None, path=p),
    }
    for name, draw in cases.items():
        fig = draw(tmp_path / f"{name}.png")
        assert isinstance(fig, Figure), name
        assert_png(tmp_path / f"{name}.png")
        if name != "dc_function":  # the DC curve needs no data; the others say what is missing
            assert notes(fig), name


def test_partial_records_are_skipped():
    """Scores that are None, losses missing or NaN, skipped steps: drawn around, never an error."""
    run = synthetic_run("dba", steps=10, eval_every=5)
    run["metrics"] += [{"type": "eval", "step": 12, "s_g": None, "s_d": 0.5, "s": None},
                       {"type": "step", "step": 10, "loss": float("nan"), "skipped": True},
                       {"type": "step", "step": 11, "loss": None, "rho": None, "lam": None}]
    plane = plots.score_plane(run)
    assert len(by_gid(plane, "plane:dba")[0].get_xdata()) == 3     # step 12 has no S_G: left out of the plane
    scores = plots.scores_over_steps(run)
    assert list(by_gid(scores, "s_d:dba")[0].get_xdata()) == [0, 5, 10, 12]
    assert list(by_gid(scores, "s_g:dba")[0].get_xdata()) == [0, 5, 10]
    loss = plots.loss_curves(run)
    assert len(by_gid(loss, "loss-raw:dba")[0].get_ydata()) == 10
    sim = plots.similarity_and_scale(run)
    assert len(by_gid(sim, "lam")[0].get_ydata()) == 10


def test_save_is_atomic_and_replaces(tmp_path):
    target = tmp_path / "sub" / "fig.png"
    plots.loss_curves(synthetic_runs()[:1], path=target)
    first = target.read_bytes()
    plots.loss_curves(synthetic_runs(), path=target)
    assert target.read_bytes() != first
    assert sorted(p.name for p in target.parent.iterdir()) == ["fig.png"]


def test_intervals_are_drawn_as_bands_and_whiskers(out):
    """Eval records with "ci" give bands over steps and whiskers on the plane's end points; results rows with
    s_lo/s_hi give bar whiskers of exactly that interval (a pooled row stands for its seeds)."""
    runs = synthetic_runs()
    for m in runs[0]["metrics"]:
        if m["type"] == "eval":
            m["ci"] = {"s_g": [m["s_g"] - 0.05, m["s_g"] + 0.03], "s_d": [m["s_d"] - 0.02, m["s_d"] + 0.04]}
    fig = plots.scores_over_steps(runs)
    (band,) = [a for a in fig.findobj() if a.get_gid() == "band:s_g:direct"]
    evals = [m for m in runs[0]["metrics"] if m["type"] == "eval"]
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(ys.min(), min(m["s_g"] for m in evals) - 0.05)
    assert not [a for a in fig.findobj() if str(a.get_gid()).startswith("band:s_g:dba")]  # no ci, no band
    assert [a for a in plots.score_plane(runs).findobj() if a.get_gid() == "whisker:direct"]
    assert [a for a in plots.live_dashboard(runs[0]).findobj() if a.get_gid() == "band:live:s_d"]
    rows = [{"method": "base", "label": "base", "s": 0.4, "s_lo": 0.3, "s_hi": 0.5},
            {"method": "dba", "label": "dba", "seed": 0, "s": 0.9},
            {"method": "dba", "label": "dba", "seed": "all", "s": 0.6, "s_lo": 0.5, "s_hi": 0.75}]
    fig = plots.score_bars(rows)
    assert [round(p.get_height(), 6) for p in with_gid(fig, "bars:s")] == [0.4, 0.6]
    (err,) = [a for a in fig.findobj() if a.get_gid() == "err:s"][:1]
    segs = [np.asarray(s)[:, 1] for s in err.get_segments()]
    assert sorted((round(s.min(), 6), round(s.max(), 6)) for s in segs) == [(0.3, 0.5), (0.5, 0.75)]
