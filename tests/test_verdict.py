"""The verdict on the DBA family (dba/compare/verdict.py): each target computed by hand on a synthetic comparison."""
from __future__ import annotations

import csv
import json

import pytest

from dba.compare.rows import RESULT_COLUMNS
from dba.compare.verdict import TARGETS, check, read_points, verdict, verdict_markdown
from dba.errors import DBAError


def _row(domain, label, method, s_d, s_g, base=(0.20, 0.50), seed="all", seconds=100.0):
    s = 2 * s_d * s_g / (s_d + s_g)
    r = {c: "" for c in RESULT_COLUMNS}
    r.update(domain=domain, label=label, method=method, seed=seed if label != "base" else "",
             status="pooled" if seed == "all" else ("base" if label == "base" else "completed"), n_seeds=3,
             s_d=s_d, s_g=s_g, s=s, d_s_d=s_d - base[0], d_s_g=s_g - base[1],
             wall_seconds=seconds if label != "base" else "")
    for k in ("s_d", "s_g", "s", "d_s_d", "d_s_g"):
        r[f"{k}_lo"], r[f"{k}_hi"] = float(r[k]) - 0.05, float(r[k]) + 0.05
    return r


def _folder(tmp_path, name, rows, anchor_s=30.0):
    d = tmp_path / name
    d.mkdir()
    with (d / "results.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    (d / "cost.json").write_text(json.dumps({"anchor": {"seconds": anchor_s}}))
    return d


def _finance(tmp_path, **variant):
    rows = [_row("finance", "base", "base", 0.20, 0.50),
            _row("finance", "direct", "direct", 0.50, 0.35),          # ΔS_D +30
            _row("finance", "mixture-0.25", "mixture", 0.40, 0.45, seconds=120.0),  # sweep = 5 × 120 = 600 s
            _row("finance", "ewc", "ewc", 0.42, 0.50),
            _row("finance", "l2sp", "l2sp", 0.35, 0.55),
            # a seed row of a pooled method is not a point of its own
            _row("finance", "ewc", "ewc", 0.99, 0.99, seed="0")]
    for label, (s_d, s_g, secs) in variant.items():
        rows.append(_row("finance", label.replace("_", "-"), label.replace("_", "-"), s_d, s_g, seconds=secs))
    return _folder(tmp_path, "fin", rows)


def test_each_target_by_hand(tmp_path):
    # dba-clip: ΔS_G −3 (the limit), ΔS_D +24 = 80 % of +30, S = HM(0.44, 0.47) ≈ 45.45 ≥ mixture S 42.35 − 1,
    # not dominated (ewc has lower S_D... 0.42 < 0.44), cost 120 + 30 = 150 ≤ 0.25 × 600
    f = _finance(tmp_path, dba_clip=(0.44, 0.47, 120.0), dba=(0.43, 0.469, 121.0))
    pts = read_points(f)["finance"]
    assert set(pts) == {"base", "direct", "mixture-0.25", "ewc", "l2sp", "dba-clip", "dba"}
    assert pts["ewc"].s_d == pytest.approx(42.0)  # the pooled row, not the seed row
    c = check(pts["dba-clip"], pts, anchor_s=30.0)
    assert all(c[t] is True for t in TARGETS), c
    assert c["numbers"]["cost_s"] == pytest.approx(150.0) and c["numbers"]["sweep_s"] == pytest.approx(600.0)
    # dba: ΔS_G −3.1 misses "keeps"; ΔS_D +23 < 24 misses "learns"; 151 s > 150 s misses "cheap"
    c = check(pts["dba"], pts, anchor_s=30.0)
    assert c["keeps"] is False and c["learns"] is False and c["cheap"] is False
    assert c["beats_mixture"] is True and c["on_front"] is True


def test_dominated_and_below_mixture(tmp_path):
    f = _finance(tmp_path, dba_clip=(0.41, 0.49, 100.0))   # ewc (0.42, 0.50) is better on both axes
    v = verdict([f])
    c = v["checks"]["dba-clip"]["finance"]
    assert c["on_front"] is False and c["numbers"]["dominated_by"] == ["ewc"]
    assert c["keeps"] is True
    assert v["best"] == "dba-clip" and v["best_meets"] is False
    md = verdict_markdown(v)
    assert "No DBA-family variant meets the targets" in md and "on_front" in md


def test_best_is_measured_on_every_domain_and_must_meet_all(tmp_path):
    fin = _finance(tmp_path, dba_clip=(0.44, 0.47, 120.0), dba_budget=(0.45, 0.50, 100.0))
    med = _folder(tmp_path, "med", [_row("medicine", "base", "base", 0.20, 0.50),
                                    _row("medicine", "direct", "direct", 0.50, 0.35),
                                    _row("medicine", "mixture-0.25", "mixture", 0.40, 0.45, seconds=120.0),
                                    _row("medicine", "dba-clip", "dba-clip", 0.44, 0.40, seconds=120.0)])
    v = verdict([fin, med])
    assert v["domains"] == ["finance", "medicine"]
    assert v["best"] == "dba-clip"            # dba-budget is better on finance but was not run on medicine
    assert v["meets"]["dba-clip"] is False    # medicine: ΔS_G −10
    assert v["checks"]["dba-clip"]["medicine"]["on_front"] is None  # no EWC/L2-SP/WiSE-FT there: not measurable


def test_refuses_folders_that_score_the_base_differently(tmp_path):
    a = _finance(tmp_path, dba_clip=(0.44, 0.47, 120.0))
    b = _folder(tmp_path, "other", [_row("finance", "base", "base", 0.25, 0.50)])
    with pytest.raises(DBAError, match="differently"):
        verdict([a, b])
    with pytest.raises(DBAError, match="no results.csv"):
        verdict([tmp_path])
