"""The forgetting study's plumbing on the tiny model: compare --seeds (a row per seed, a pooled row, intervals that
hold their estimate), WiSE-FT rows, results.csv columns, "within noise" in the summary, the forgetting plane's Pareto
front, and dba eval --eval-items 0 scoring every item."""
import csv
import json
from pathlib import Path

import pytest
import torch

from dba.cli import main as cli_main
from dba.compare import RESULT_COLUMNS, CompareConfig, compare
from dba.compare.report import markdown_table
from dba.scores import paired_delta, scores_from_record, seed_intervals


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    return {
        "dom": _jsonl(d / "dom.jsonl", [{"instruction": f"What is {a} plus {b}?", "output": f"{a + b}."}
                                        for a in range(1, 5) for b in range(1, 4)]),
        "gen": _jsonl(d / "gen.jsonl", [{"instruction": f"Name colour {i}.", "output": "Blue."} for i in range(8)]),
        "mc_dom": _jsonl(d / "mc_dom.jsonl", [{"question": f"What is {a} plus 1?", "choices": [str(a + 1), str(a + 7)],
                                               "answer": 0} for a in range(7)]),
        "mc_gen": _jsonl(d / "mc_gen.jsonl", [{"question": f"What colour is thing {i}?", "choices": ["Blue", "Seven",
                                               "Up"], "answer": i % 3} for i in range(9)]),
        "pairs_dom": _jsonl(d / "pairs_dom.jsonl", [{"question": f"What is {a} plus 2?", "answer": f"{a + 2}."}
                                                    for a in range(5)]),
        "pairs_gen": _jsonl(d / "pairs_gen.jsonl", [{"question": f"Which colour is item {i}?", "answer": "Blue."}
                                                    for i in range(6)]),
    }


@pytest.fixture(scope="module")
def study(data, tmp_path_factory):
    """dba compare --seeds 2 --wiseft 0.5 on the tiny model, from the command line."""
    out = tmp_path_factory.mktemp("cmp") / "out"
    rc = cli_main(["compare", "--model", "tiny", "--lora-rank", "4", "--domains", data["dom"], "--general",
                   data["gen"], "--general-eval", data["mc_gen"], "--domain-eval", data["mc_dom"], "--methods",
                   "direct,dba", "--seeds", "2", "--wiseft", "0.5", "--steps", "2", "--batch-size", "4",
                   "--max-length", "48", "--anchor-batches", "2", "--eval-items", "0", "--scorer", "loglik",
                   "--lr", "0.05", "--general-heldout", data["pairs_gen"], "--domain-heldout", data["pairs_dom"],
                   "-o", str(out), "--quiet"])
    assert rc == 0
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, rows


def _f(x):
    return None if x in ("", None) else float(x)


def test_heldout_nll_pooled_over_seeds_and_on_wiseft_rows(study):
    out, rows = study
    base = rows[0]
    for r in rows:
        for k in ("nll_g", "nll_d"):
            v, lo, hi = _f(r[k]), _f(r[k + "_lo"]), _f(r[k + "_hi"])
            assert v is not None and lo <= v <= hi, (r["label"], r["seed"], k)
            assert _f(r["d_" + k]) == pytest.approx(v - _f(base[k]), abs=2e-4)
    by = {(r["label"], r["seed"]): r for r in rows}
    for label in ("direct", "dba", "dba+wiseft-0.5"):
        seeds = [_f(by[(label, s)]["nll_d"]) for s in ("0", "1")]
        assert _f(by[(label, "all")]["nll_d"]) == pytest.approx(sum(seeds) / 2, abs=2e-4)  # mean over seeds x pairs
    summary = (out / "summary.md").read_text()
    assert summary.count("### Held-out answer NLL per token") == 2  # pooled and every seed


def test_results_csv_columns_and_a_row_per_seed_plus_a_pooled_row(study):
    out, rows = study
    with open(out / "results.csv", newline="") as f:
        assert next(csv.reader(f)) == list(RESULT_COLUMNS)
    for col in ("s_g_lo", "s_g_hi", "d_s_g_lo", "d_s_g_hi", "vs_direct_s_lo", "n_seeds", "n_g", "n_d", "seed"):
        assert col in RESULT_COLUMNS
    got = [(r["label"], r["seed"]) for r in rows]
    assert got == [("base", ""),
                   ("direct", "0"), ("direct", "1"), ("direct", "all"),
                   ("direct+wiseft-0.5", "0"), ("direct+wiseft-0.5", "1"), ("direct+wiseft-0.5", "all"),
                   ("dba", "0"), ("dba", "1"), ("dba", "all"),
                   ("dba+wiseft-0.5", "0"), ("dba+wiseft-0.5", "1"), ("dba+wiseft-0.5", "all")]
    for r in rows[1:]:
        assert int(r["n_g"]) == 9 and int(r["n_d"]) == 7  # --eval-items 0: every item
        assert int(r["n_seeds"]) == (2 if r["seed"] == "all" else 1)
    assert (out / "runs" / "dba" / "seed-1" / "status.json").exists()
    cfgs = [json.loads((out / "runs" / "direct" / f"seed-{k}" / "config.json").read_text()) for k in (0, 1)]
    assert [c["seed"] for c in cfgs] == [0, 1]


def test_every_interval_holds_its_estimate(study):
    _, rows = study
    names = ("s_d", "s_g", "s", "d_s_d", "d_s_g", "d_s", "vs_direct_s_d", "vs_direct_s_g", "vs_direct_s")
    checked = 0
    for r in rows:
        for k in names:
            v, lo, hi = _f(r[k]), _f(r[k + "_lo"]), _f(r[k + "_hi"])
            if v is None or lo is None:
                continue
            assert lo - 1e-4 <= v <= hi + 1e-4, (r["label"], r["seed"], k, lo, v, hi)
            checked += 1
    assert checked >= 80
    assert all(r["vs_direct_s_g"] == "" for r in rows if r["label"] == "direct")


def test_pooled_row_is_the_seed_x_item_bootstrap_of_the_run_folders(study):
    out, rows = study
    runs = [scores_from_record([m for m in map(json.loads, (out / "runs" / "dba" / f"seed-{k}" / "metrics.jsonl")
                                                .read_text().splitlines()) if m.get("type") == "eval"][-1])
            for k in (0, 1)]
    base = scores_from_record(json.loads((out / "base.json").read_text())[rows[0]["domain"]])
    pooled = next(r for r in rows if r["label"] == "dba" and r["seed"] == "all")
    iv = seed_intervals(runs)
    assert _f(pooled["s_g"]) == pytest.approx((runs[0].s_g + runs[1].s_g) / 2, abs=1e-4)
    assert (_f(pooled["s_g_lo"]), _f(pooled["s_g_hi"])) == pytest.approx((iv["s_g"].lo, iv["s_g"].hi), abs=1e-4)
    assert iv["s_g"].n_seeds == 2 and iv["s_g"].method.startswith("seed x item")
    d = paired_delta(runs, base)
    assert (_f(pooled["d_s_d_lo"]), _f(pooled["d_s_d_hi"])) == pytest.approx((d["s_d"].lo, d["s_d"].hi), abs=1e-4)
    # every evaluation record in a run folder carries its intervals and item counts
    final = [json.loads(x) for x in (out / "runs" / "dba" / "seed-0" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["ci"]["s_g"] and final["n"] == {"general": 9, "domain": 7}


def test_wiseft_rows_score_the_interpolated_run(study, data):
    from dba.data import load_mc
    from dba.runs import load_trained
    from dba.scores import evaluate
    from dba.wiseft import interpolated

    out, rows = study
    row = next(r for r in rows if r["label"] == "dba+wiseft-0.5" and r["seed"] == "1")
    assert row["method"] == "wiseft" and _f(row["alpha"]) == 0.5 and row["tokens"] == "0"
    assert _f(row["wall_seconds"]) > 0
    lm = load_trained(out / "runs" / "dba" / "seed-1")
    with interpolated(lm.model, 0.5) as m:
        sc = evaluate(m, lm.tokenizer, load_mc(data["mc_gen"]), load_mc(data["mc_dom"]), scorer="loglik")
    assert _f(row["s_g"]) == pytest.approx(sc.s_g, abs=1e-4) and _f(row["s_d"]) == pytest.approx(sc.s_d, abs=1e-4)
    cost = json.loads((out / "cost.json").read_text())
    dom = next(iter(cost["domains"].values()))
    assert dom["wiseft"]["dba+wiseft-0.5"]["per_seed"][1] == pytest.approx(_f(row["wall_seconds"]), abs=1e-3)


def test_cost_per_seed_and_in_total(study):
    out, rows = study
    cost = json.loads((out / "cost.json").read_text())
    assert cost["seeds"] == 2
    dom = next(iter(cost["domains"].values()))
    assert {k: len(v) for k, v in dom["runs_per_seed"].items()} == {"direct": 2, "dba": 2}
    per_seed = [c["seconds"] for cs in dom["runs_per_seed"].values() for c in cs]
    assert dom["all_runs"]["seconds"] == pytest.approx(sum(per_seed), abs=1e-2)
    wise = sum(sum(w["per_seed"]) for w in dom["wiseft"].values())
    assert cost["total"]["seconds"] == pytest.approx(cost["anchor"]["seconds"] + sum(per_seed) + wise, abs=1e-2)
    summary = (out / "summary.md").read_text()
    assert "seconds per seed" in summary and "Everything together" in summary
    assert "## Pooled over the seeds" in summary and "## Every seed" in summary
    assert (out / f"{Path(rows[0]['domain']).stem}_forgetting_plane.png").exists()


def test_resume_of_a_seeded_comparison_keeps_every_run(study):
    out, rows = study
    cfg = CompareConfig.from_dict(json.loads((out / "compare.json").read_text())["config"])
    assert cfg.seeds == 2 and cfg.wiseft == [0.5]
    events = []
    res = compare(cfg, callback=events.append, progress=False, resume=True)
    assert res.status == "completed"
    assert sum(e.get("phase") == "skip" for e in events) == 4
    assert not any(e.get("phase") in ("run", "wiseft") for e in events)
    with open(out / "results.csv", newline="") as f:
        again = list(csv.DictReader(f))
    strip = ("wall_seconds", "eval_seconds")
    assert [{k: v for k, v in r.items() if k not in strip} for r in again] == \
        [{k: v for k, v in r.items() if k not in strip} for r in rows]


def _row(label, d, lo, hi):
    return {"domain": "finance", "label": label, "seed": 0, "status": "completed", "s_g": 0.5, "s_g_lo": 0.4,
            "s_g_hi": 0.6, "n_g": 20, "n_d": 20, "n_seeds": 1, "d_s_g": d, "d_s_g_lo": lo, "d_s_g_hi": hi,
            "tokens": 10, "wall_seconds": 1.0}


def test_summary_says_within_noise_when_the_interval_of_a_difference_holds_zero():
    table = markdown_table([_row("noisy", 0.02, -0.05, 0.1), _row("clear", 0.08, 0.02, 0.14)])
    noisy, clear = table.splitlines()[2:]
    assert "+2.0 [-5.0, +10.0] (within noise)" in noisy
    assert "+8.0 [+2.0, +14.0]" in clear and "within noise" not in clear
    assert "50.0 [40.0, 60.0]" in noisy


def test_pareto_front_of_hand_made_points():
    from dba.plots import pareto_front

    pts = [(0.2, 0.6), (0.5, 0.35), (0.45, 0.5), (0.38, 0.57), (0.44, 0.42), (0.3, 0.58), (0.3, 0.5), (0.2, 0.6)]
    # (0.44, 0.42) is dominated by (0.45, 0.5); (0.3, 0.5) by (0.3, 0.58); the two (0.2, 0.6) tie: both stay
    assert pareto_front(pts) == [0, 7, 5, 3, 2, 1]
    assert pareto_front([]) == [] and pareto_front([(0.1, 0.1)]) == [0]


def test_forgetting_plane_draws_whiskers_curves_front_and_cost(tmp_path):
    from dba.plots import forgetting_plane, plane_points

    def r(label, method, x, y, **kw):
        return {"domain": "finance", "label": label, "method": method, "s_d": x, "s_d_lo": x - 0.05,
                "s_d_hi": x + 0.05, "s_g": y, "s_g_lo": y - 0.04, "s_g_hi": y + 0.04, "wall_seconds": 50.0, **kw}
    rows = [r("base", "base", 0.2, 0.6, wall_seconds=None), r("direct", "direct", 0.5, 0.35, seed="all"),
            r("direct", "direct", 0.9, 0.9, seed=0),  # a seed row: the pooled row stands for the label
            r("mixture-0.25", "mixture", 0.45, 0.5, ratio=0.25), r("mixture-0.5", "mixture", 0.38, 0.57, ratio=0.5),
            r("dba", "dba", 0.44, 0.42), r("direct+wiseft-0.5", "wiseft", 0.4, 0.52, alpha=0.5, wall_seconds=3.0)]
    pts = plane_points(rows)
    assert [p["label"] for p in pts] == ["base", "direct", "mixture-0.25", "mixture-0.5", "dba", "direct+wiseft-0.5"]
    fig = forgetting_plane(rows, path=tmp_path / "plane.png")
    gids = {a.get_gid() for a in fig.findobj() if a.get_gid()}
    assert {"pareto-front", "mixture-curve", "wiseft-curve:direct", "whisker:dba", "whisker:direct"} <= gids
    front = next(a for a in fig.findobj() if a.get_gid() == "pareto-front")
    assert set(zip(*front.get_data())) >= {(0.2, 0.6), (0.5, 0.35), (0.45, 0.5)}
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("50 s" in t for t in texts) and any("3.0 s" in t for t in texts)
    assert (tmp_path / "plane.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_items_0_scores_every_item(data, capsys):
    rc = cli_main(["eval", "--model", "tiny", "--eval", data["mc_gen"], "--scorer", "loglik", "--eval-items", "0",
                   "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    (row,) = res["sets"]
    assert row["n"] == 9 and len(row["per_item"]["score"]) == 9
    assert row["score_lo"] <= row["score"] <= row["score_hi"]
    rc = cli_main(["eval", "--model", "tiny", "--eval", data["mc_gen"], "--scorer", "loglik", "--eval-items", "4",
                   "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["sets"][0]["n"] == 4


@pytest.mark.parametrize("args, msg", [
    (["--eval-items", "-1"], "--eval-items must be 0 (all items)"),
    (["--eval", "{empty}"], "is empty"),
])
def test_eval_that_would_score_nothing_is_refused_in_one_line(data, tmp_path, capsys, args, msg):
    (tmp_path / "empty.jsonl").write_text("")
    argv = ["eval", "--model", "tiny", "--eval", data["mc_gen"]] if "--eval" not in args else ["eval", "--model", "tiny"]
    rc = cli_main(argv + [a.format(empty=tmp_path / "empty.jsonl") for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_compare_refuses_bad_seeds_and_alphas_in_one_line(tmp_path, capsys):
    for flag, val, msg in (("--seeds", "0", "seeds must be at least 1"), ("--wiseft", "1.5", "not in (0, 1)"),
                           ("--wiseft", "x", "--wiseft must be numbers")):
        rc = cli_main(["compare", "--model", "tiny", flag, val, "-o", str(tmp_path / "x"), "--print-config"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err


def test_wiseft_posthoc_adds_the_curve_of_chosen_runs_to_a_finished_comparison(data, tmp_path):
    """scripts/wiseft_posthoc.py: a comparison made without --wiseft gets WiSE-FT rows for the runs named (here
    direct, not dba), scored on the interpolated weights, and its tables are rewritten; no run is trained again."""
    import importlib.util

    out = tmp_path / "cmp"
    assert cli_main(["compare", "--model", "tiny", "--lora-rank", "4", "--domains", data["dom"], "--general",
                     data["gen"], "--general-eval", data["mc_gen"], "--domain-eval", data["mc_dom"], "--methods",
                     "direct,dba", "--steps", "2", "--batch-size", "4", "--max-length", "48", "--anchor-batches",
                     "2", "--eval-items", "0", "--scorer", "loglik", "--lr", "0.05", "--general-heldout", "none",
                     "--domain-heldout", "none", "-o", str(out), "--quiet"]) == 0
    status_before = (out / "runs" / "dba" / "status.json").read_text()
    spec = importlib.util.spec_from_file_location("wiseft_posthoc", Path(__file__).parents[1] / "scripts" /
                                                  "wiseft_posthoc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(out), "--labels", "direct", "--alphas", "0.5"]) == 0
    with open(out / "results.csv", newline="") as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    assert "direct+wiseft-0.5" in rows and "dba+wiseft-0.5" not in rows
    assert rows["direct+wiseft-0.5"]["method"] == "wiseft" and _f(rows["direct+wiseft-0.5"]["alpha"]) == 0.5
    assert (out / "runs" / "dba" / "status.json").read_text() == status_before  # kept, not retrained
    assert mod.main([str(out), "--labels", "nope"]) == 2
    assert mod.main([str(out), "--alphas", "1.5"]) == 2
