"""dba compare on the tiny model: a complete results.csv, every plot, one shared anchor, cost sums that add up."""
import csv
import json
import threading
from pathlib import Path

import pytest
import torch

import dba.anchor
from dba import LoraSettings
from dba.cli import main as cli_main
from dba.compare import DEFAULT_METHODS, CompareConfig, compare, cost_accounting, load_runs, run_cost
from dba.errors import DBAError
from dba.global_gradient import GlobalGradient
from dba.optim import AnnealConfig, BoostConfig, DBAConfig

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: with 2 threads on a busy 2-core machine OpenMP spin-waits cost ~50x (measured); 1 is faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PLOTS = ("scores_over_steps", "nll_over_steps", "score_plane", "loss_curves", "similarity_and_scale", "dc_function",
         "score_bars", "forgetting_plane")


def _write_jsonl(path: Path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    dom = [{"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."}
           for a in range(1, 5) for b in range(1, 4)]
    gen = [{"instruction": f"Name colour number {i}.", "output": "Blue."} for i in range(8)]
    mc_dom = [{"question": f"What is {a} plus 1?", "choices": [str(a + 1), str(a + 7)], "answer": 0} for a in range(4)]
    mc_gen = [{"question": f"What colour is thing {i}?", "choices": ["Blue", "Seven"], "answer": 0} for i in range(4)]
    pairs_dom = [{"question": f"What is {a} plus 3?", "answer": f"{a} plus 3 is {a + 3}."} for a in range(4)]
    pairs_gen = [{"question": f"Which colour is item {i}?", "answer": f"Item {i} is blue."} for i in range(4)]
    return {"dom": _write_jsonl(d / "dom.jsonl", dom), "gen": _write_jsonl(d / "gen.jsonl", gen),
            "mc_dom": _write_jsonl(d / "mc_dom.jsonl", mc_dom), "mc_gen": _write_jsonl(d / "mc_gen.jsonl", mc_gen),
            "pairs_dom": _write_jsonl(d / "pairs_dom.jsonl", pairs_dom),
            "pairs_gen": _write_jsonl(d / "pairs_gen.jsonl", pairs_gen)}


def tiny_compare(data, out, **kw) -> CompareConfig:
    base = dict(model="tiny", lora=LoraSettings(rank=4, alpha=8), domains=[data["dom"]], general=data["gen"],
                general_eval=data["mc_gen"], domain_eval=data["mc_dom"], ratios=[0.25, 0.5], steps=3,
                batch_size=4, max_length=48, anchor_batches=2, eval_every=2, eval_items=3,
                dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=5e-3)), output_dir=str(out))
    base.update(kw)
    return CompareConfig(**base)


@pytest.fixture(scope="module")
def full(data, tmp_path_factory):
    """One complete comparison (every method), counting the anchor passes and collecting the callback events."""
    out = tmp_path_factory.mktemp("cmp") / "out"
    calls, events = [], []
    real = dba.anchor.estimate_global_gradient

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dba.anchor, "estimate_global_gradient", counting)
        res = compare(tiny_compare(data, out, general_heldout=data["pairs_gen"], domain_heldout=data["pairs_dom"]),
                      callback=events.append, progress=False)
    return res, out, calls, events


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_results_csv_has_every_method_and_a_base_row(full):
    res, out, _, _ = full
    assert res.status == "completed" and not res.warnings, res.warnings
    rows = _csv(out / "results.csv")
    labels = [r["label"] for r in rows]
    expected = ["base", "direct", "mixture-0.25", "mixture-0.5"] + [m for m in DEFAULT_METHODS if m.startswith("dba")]
    assert labels == expected
    assert {r["method"] for r in rows} == {"base", *DEFAULT_METHODS}
    base = rows[0]
    assert base["method"] == "base" and float(base["d_s"]) == 0.0
    for r in rows[1:]:
        assert r["status"] == "completed"
        for k in ("s_d", "s_g", "s"):
            assert 0.0 <= float(r[k]) <= 1.0
            assert float(r["d_" + k]) == pytest.approx(float(r[k]) - float(base[k]), abs=2e-4)
        assert int(r["tokens"]) > 0 and float(r["wall_seconds"]) > 0 and float(r["device_seconds"]) > 0
        assert int(r["steps"]) == 3
    mix = {r["label"]: r for r in rows if r["method"] == "mixture"}
    assert mix["mixture-0.25"]["general_per_batch"] == "1" and mix["mixture-0.5"]["general_per_batch"] == "2"
    # the rows the API returns are the file's rows
    assert [r["label"] for r in res.rows] == labels


def test_heldout_nll_in_every_evaluation_results_csv_and_summary(full):
    res, out, _, _ = full
    rows = _csv(out / "results.csv")
    for col in ("nll_g", "nll_g_lo", "nll_g_hi", "nll_d", "nll_d_lo", "nll_d_hi", "d_nll_g", "d_nll_g_lo",
                "d_nll_g_hi", "d_nll_d", "d_nll_d_lo", "d_nll_d_hi"):
        assert col in rows[0], col
    base = rows[0]
    assert float(base["d_nll_g"]) == 0.0
    for r in rows:
        for k in ("nll_g", "nll_d"):
            assert float(r[k + "_lo"]) <= float(r[k]) <= float(r[k + "_hi"]) and float(r[k]) > 0
            assert float(r["d_" + k]) == pytest.approx(float(r[k]) - float(base[k]), abs=2e-4)
    by_label = {r["label"]: r for r in rows}
    for run in load_runs(out):
        evals = [m for m in run["metrics"] if m["type"] == "eval"]
        assert all(m["nll_g"] is not None and m["nll_d"] is not None for m in evals)
        assert evals[-1]["nll_d"] == pytest.approx(float(by_label[run["label"]]["nll_d"]), abs=1e-4)
    base_json = json.loads((out / "base.json").read_text())
    assert next(iter(base_json.values()))["nll_d"] == pytest.approx(float(base["nll_d"]), abs=1e-4)
    summary = (out / "summary.md").read_text()
    assert "Held-out answer NLL per token" in summary and "ΔNLL_D vs base" in summary


def test_every_plot_is_written(full):
    res, out, _, _ = full
    key = "dom"  # the domain file dom.jsonl
    for name in PLOTS:
        p = out / f"{key}_{name}.png"
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (out / "anchor_spectrum.png").exists()
    assert set(res.plots) == {f"{key}_{n}" for n in PLOTS} | {"anchor_spectrum"}


def test_anchor_estimated_once_and_shared_by_every_dba_run(full):
    res, out, calls, events = full
    assert len(calls) == 1, "the global gradient must be estimated exactly once"
    anchor = out / "anchor.safetensors"
    assert res.anchor_path == anchor.resolve()
    meta = GlobalGradient.read_metadata(anchor)
    runs = load_runs(out)
    dba_runs = [r for r in runs if r["method"].startswith("dba")]
    assert len(dba_runs) == 6
    for r in dba_runs:
        info = r["config"]["anchor_info"]
        assert Path(info["path"]).resolve() == anchor.resolve()
        assert info["batches"] == meta["batches"] and info["sha256_16"] == dba_runs[0]["config"]["anchor_info"][
            "sha256_16"]
        assert not (Path(r["dir"]) / "anchor.safetensors").exists()  # no run estimated its own
        assert r["status"]["anchor_seconds"] == 0.0
    for r in runs:
        if not r["method"].startswith("dba"):
            assert r["config"]["anchor_info"] is None
            # config.json records what ran: the baselines ran without boost or correction, T = the run's steps
            assert r["config"]["dba"]["boost"]["enabled"] is False and r["config"]["dba"]["total_steps"] == 3
    # the variants differ from dba in exactly the intended piece
    cfg = {r["label"]: r["config"]["dba"] for r in dba_runs}
    assert cfg["dba-no-ggb"]["boost"]["enabled"] is False and cfg["dba"]["boost"]["enabled"] is True
    assert cfg["dba-no-dc"]["correction"]["enabled"] is False
    assert cfg["dba-no-al"]["anneal"]["enabled"] is False
    assert cfg["dba-projection"]["boost"]["mode"] == "projection"
    assert cfg["dba-relative"]["boost"]["scale"] == "relative"


def test_base_scored_once_and_shared_as_step_zero(full):
    res, out, _, events = full
    base = json.loads((out / "base.json").read_text())
    dom = next(iter(base))
    assert [e for e in events if e.get("phase") == "base"] and len([e for e in events if e.get("phase") == "base"]) == 1
    for r in load_runs(out):
        evals = [m for m in r["metrics"] if m["type"] == "eval"]
        assert [m["step"] for m in evals] == [0, 2, 3]
        assert evals[0]["shared"] is True and evals[0]["s"] == base[dom]["s"]
        assert r["status"]["scores"]["s"] == evals[-1]["s"]
        assert r["status"]["eval_seconds"] > 0  # the step-2 evaluation was timed


def test_cost_sums_add_up_from_the_run_folders(full):
    res, out, _, _ = full
    cost = json.loads((out / "cost.json").read_text())
    meta = GlobalGradient.read_metadata(out / "anchor.safetensors")
    dom = next(iter(cost["domains"]))
    st = {r["label"]: r["status"] for r in load_runs(out)}
    net = {lab: s["wall_seconds"] - s["eval_seconds"] for lab, s in st.items()}
    d = cost["domains"][dom]
    assert d["mixture"]["ratios"] == 2
    assert d["mixture"]["total"]["seconds"] == pytest.approx(net["mixture-0.25"] + net["mixture-0.5"], abs=0.01)
    assert d["mixture"]["total"]["tokens"] == st["mixture-0.25"]["tokens"] + st["mixture-0.5"]["tokens"]
    assert cost["anchor"]["seconds"] == pytest.approx(meta["seconds"])
    assert cost["anchor"]["tokens"] == meta["tokens"] > 0
    assert d["dba"]["total"]["seconds"] == pytest.approx(net["dba"] + meta["seconds"], abs=0.01)
    assert d["dba"]["total"]["tokens"] == st["dba"]["tokens"] + meta["tokens"]
    share = d["dba_share_of_sweep"]
    assert share["seconds"] == pytest.approx(d["dba"]["total"]["seconds"] / d["mixture"]["total"]["seconds"],
                                             rel=1e-3)
    assert share["tokens"] == pytest.approx(d["dba"]["total"]["tokens"] / d["mixture"]["total"]["tokens"])
    summary = (out / "summary.md").read_text()
    assert "| dom | dba |" in summary and "2-ratio mixture sweep" in summary and "% of the sweep" in summary


def test_cost_accounting_amortises_the_anchor_over_domains():
    st = lambda w, e, t: {"wall_seconds": w, "device_seconds": w, "eval_seconds": e, "tokens": t}  # noqa: E731
    statuses = {"a": {"dba": st(10, 2, 100), "mixture-0.5": st(20, 1, 300), "mixture-0.25": st(30, 0, 200)},
                "b": {"dba": st(12, 0, 120), "mixture-0.5": st(25, 5, 250)}}
    methods = {"dba": "dba", "mixture-0.5": "mixture", "mixture-0.25": "mixture"}
    anchor = {"seconds": 6.0, "device_seconds": 6.0, "tokens": 60}
    c = cost_accounting(statuses, methods, anchor, n_domains=2)
    assert c["domains"]["a"]["dba"]["total"] == {"seconds": 8 + 3, "device_seconds": 8 + 3, "tokens": 100 + 30}
    assert c["domains"]["a"]["mixture"]["total"]["seconds"] == 19 + 30
    assert c["domains"]["a"]["dba_share_of_sweep"]["seconds"] == pytest.approx(11 / 49)
    assert c["dba_all_domains"]["seconds"] == 6 + 8 + 12
    assert c["mixture_all_domains"]["tokens"] == 300 + 200 + 250
    assert run_cost({"wall_seconds": 10, "device_seconds": 20, "eval_seconds": 4, "tokens": 5}) == {
        "seconds": 6, "device_seconds": 12, "tokens": 5}


@pytest.mark.filterwarnings("ignore:.*longer than max_length")  # bundled rows cut short to keep the test fast
def test_two_domains_from_the_cli_reuse_one_anchor(data, tmp_path, capsys):
    out = tmp_path / "two"
    rc = cli_main(["compare", "--model", "tiny", "--lora-rank", "4", "--domains", "finance,law",
                   "--general", data["gen"], "--general-eval", data["mc_gen"], "--methods", "dba,mixture",
                   "--ratios", "0.5", "--steps", "2", "--batch-size", "2", "--max-length", "48",
                   "--anchor-batches", "2", "--eval-items", "2", "--lr", "5e-3", "--k0", "0.3", "--quiet",
                   "-o", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0
    rows = _csv(out / "results.csv")
    assert [(r["domain"], r["label"]) for r in rows] == [
        ("finance", "base"), ("finance", "mixture-0.5"), ("finance", "dba"),
        ("law", "base"), ("law", "mixture-0.5"), ("law", "dba")]
    assert "domain,method,label,seed,ratio" in printed
    runs = load_runs(out)
    assert {Path(r["dir"]).relative_to(out).as_posix() for r in runs} == {
        "runs/finance/mixture-0.5", "runs/finance/dba", "runs/law/mixture-0.5", "runs/law/dba"}
    paths = {r["config"]["anchor_info"]["path"] for r in runs if r["method"] == "dba"}
    assert paths == {str((out / "anchor.safetensors").resolve())}
    cost = json.loads((out / "cost.json").read_text())
    a = cost["anchor"]
    assert a["domains_sharing"] == 2
    assert a["amortised_per_domain"]["seconds"] == pytest.approx(a["seconds"] / 2)
    st = {(r["domain"], r["label"]): r["status"] for r in runs}
    assert cost["dba_all_domains"]["tokens"] == a["tokens"] + st[("finance", "dba")]["tokens"] + \
        st[("law", "dba")]["tokens"]
    for key in ("finance", "law"):
        assert (out / f"{key}_score_bars.png").exists()
    # the general set was scored once and shared by both domains
    base = json.loads((out / "base.json").read_text())
    assert base["finance"]["s_g"] == base["law"]["s_g"]


def test_cancel_then_resume_keeps_finished_runs_and_the_anchor(data, tmp_path):
    out = tmp_path / "c"
    cfg = tiny_compare(data, out, methods=["direct", "dba"], eval_every=0)
    stop = threading.Event()

    def on_event(e):
        if e.get("run") == "dba" and e.get("type") == "step" and e["step"] == 0:
            stop.set()

    res = compare(cfg, cancel=stop, callback=on_event, progress=False)
    assert res.status == "cancelled"
    rows = {r["label"]: r for r in _csv(out / "results.csv")}
    assert rows["direct"]["status"] == "completed" and rows["dba"]["status"] == "cancelled"
    direct_status = (out / "runs" / "direct" / "status.json").read_text()
    anchor_bytes = (out / "anchor.safetensors").read_bytes()

    with pytest.raises(DBAError, match="already holds a comparison"):
        compare(cfg, progress=False)
    res2 = compare(cfg, progress=False, resume=True)
    assert res2.status == "completed"
    assert (out / "runs" / "direct" / "status.json").read_text() == direct_status  # kept, not rerun
    assert (out / "anchor.safetensors").read_bytes() == anchor_bytes
    rows = {r["label"]: r for r in _csv(out / "results.csv")}
    assert rows["dba"]["status"] == "completed" and rows["dba"]["steps"] == "3"


def test_cli_resume_of_a_copied_folder_resumes_the_copy(data, tmp_path, capsys):
    import shutil

    from dba.compare import resume_config

    orig = tmp_path / "orig"
    cfg = tiny_compare(data, orig, methods=["direct", "dba"], eval_every=0)
    stop = threading.Event()

    def on_event(e):
        if e.get("run") == "dba" and e.get("type") == "step" and e["step"] == 0:
            stop.set()

    assert compare(cfg, cancel=stop, callback=on_event, progress=False).status == "cancelled"
    copy = tmp_path / "copy"
    shutil.copytree(orig, copy)
    before = {p.relative_to(orig): p.read_bytes() for p in orig.rglob("*") if p.is_file()}
    assert resume_config(copy).output_dir == str(copy)
    assert cli_main(["compare", "--resume", str(copy), "--quiet"]) == 0
    capsys.readouterr()
    rows = {r["label"]: r for r in _csv(copy / "results.csv")}
    assert rows["dba"]["status"] == "completed" and rows["direct"]["status"] == "completed"
    assert (copy / "runs" / "dba" / "adapter").exists()
    assert json.loads((copy / "compare.json").read_text())["config"]["output_dir"] == str(copy)
    after = {p.relative_to(orig): p.read_bytes() for p in orig.rglob("*") if p.is_file()}
    assert after == before, "resuming the copy must not touch the original"
    assert cli_main(["compare", "--resume", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("kw, msg", [
    (dict(ratios=[0.2, 0.3], batch_size=8), "both give 2 general examples"),
    (dict(ratios=[0.05], batch_size=4), "gives 0 general examples"),
    (dict(methods=["dba", "sgd"]), "Unknown method"),
    (dict(domains=[]), "No domain"),
    (dict(steps=0), "at least 1"),
    (dict(domains=["no-such-domain"], domain_eval=None), "Unknown bundled data set"),
    (dict(general_eval="/no/such/eval.jsonl"), "not found"),
    (dict(anchor="/no/such/anchor.safetensors"), "not found"),
    (dict(domains=["finance", "law"], domain_eval=None, domain_heldout="/some/pairs.jsonl"), "domain_heldout names"),
    (dict(general_heldout="/no/such/pairs.jsonl"), "not found"),
])
def test_bad_configs_fail_before_any_work(data, tmp_path, kw, msg):
    with pytest.raises(DBAError, match=msg):
        compare(tiny_compare(data, tmp_path / "bad", **kw), progress=False)
    assert not (tmp_path / "bad").exists()


def test_cli_errors_exit_2_without_traceback(tmp_path, capsys):
    rc = cli_main(["compare", "--model", "tiny", "--methods", "dba,nope", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "Unknown method" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = cli_main(["compare", "--resume", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "not a comparison folder" in err
