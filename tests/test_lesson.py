"""The five-minute lesson (dba.lesson) and the computed-once cache (dba.cache), on the tiny model.

- cache: the global gradient and the base scores are reused on a second call, recomputed after the corpus, the
  evaluation items or the model's weights changed, and a cached file whose stored key differs is never used;
- the lesson record: both runs, intervals at every evaluation, answers to every question from base, direct and the
  remedy, a summary; the second lesson uses both caches; the record saves, loads and is drawn;
- the summary's verdicts against hand-made records (forgot / held / did not hold);
- the shipped recorded lesson (app/recorded_lesson.json) loads and is drawn by the same code.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dba.cache import cached_anchor, cached_base_scores, cached_json, digest
from dba.config import AnchorConfig, LoraSettings
from dba.data import MCItem, bundled_path, load_mc
from dba.errors import DBAError
from dba.lesson import (LESSON_REMEDY, QUESTIONS, LessonConfig, answers_markdown, answers_table, figures, load_record,
                        remedy_choices, run_lesson, save_record, summarise)
from dba.models import base_model, load_model, weight_fingerprint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", lora=LoraSettings(rank=4), device="cpu")


def _corpus(tmp_path: Path, n: int = 12) -> Path:
    lines = bundled_path("general", "train").read_text(encoding="utf-8").splitlines()[:n]
    p = tmp_path / "general.jsonl"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# --------------------------------------------------------------------------------------------------------------------
# The cache


def test_anchor_cache_hit_and_misses(tiny, tmp_path):
    corpus = _corpus(tmp_path)
    cfg = AnchorConfig(corpus=str(corpus), batches=2, batch_size=2, max_length=128)
    cache = tmp_path / "cache"
    g1, use1 = cached_anchor(tiny, cfg, cache_dir=cache)
    assert not use1.hit and use1.reason == "no cached result for this key" and Path(use1.file).exists()
    g2, use2 = cached_anchor(tiny, cfg, cache_dir=cache)
    assert use2.hit and use2.file == use1.file and use2.reason == "found"
    assert use2.computed_seconds is not None and "from the cache" in use2.describe()
    for n in g1.names():  # the stored anchor is the one computed
        torch.testing.assert_close(g2.matrix(n), g1.matrix(n))

    # the corpus changed: another key, recomputed
    corpus.write_text(corpus.read_text(encoding="utf-8").replace("100", "200"), encoding="utf-8")
    _, use3 = cached_anchor(tiny, cfg, cache_dir=cache)
    assert not use3.hit and use3.file != use1.file

    # other anchor settings: another key
    _, use4 = cached_anchor(tiny, cfg.replace(batches=1), cache_dir=cache)
    assert not use4.hit

    # caching off: computed, nothing stored
    _, use5 = cached_anchor(tiny, cfg, cache_dir=tmp_path / "off", enabled=False)
    assert not use5.hit and use5.file is None and not (tmp_path / "off").exists()


def test_anchor_cache_miss_after_weight_change(tmp_path):
    lm = load_model("tiny", lora=LoraSettings(rank=4), device="cpu")
    cfg = AnchorConfig(corpus=str(_corpus(tmp_path)), batches=1, batch_size=2, max_length=128)
    cache = tmp_path / "cache"
    _, use1 = cached_anchor(lm, cfg, cache_dir=cache)
    fp = weight_fingerprint(lm.model)
    with torch.no_grad():
        base_model(lm.model).model.norm.weight.add_(0.01)
    assert weight_fingerprint(lm.model) != fp
    _, use2 = cached_anchor(lm, cfg, cache_dir=cache)
    assert not use2.hit and use2.file != use1.file


def test_a_cached_file_whose_key_differs_is_never_used(tiny, tmp_path):
    cfg = AnchorConfig(corpus=str(_corpus(tmp_path)), batches=1, batch_size=2, max_length=128)
    cache = tmp_path / "cache"
    _, use_a = cached_anchor(tiny, cfg, cache_dir=cache)
    _, use_b = cached_anchor(tiny, cfg.replace(batch_size=3), cache_dir=cache)
    # put the other settings' anchor where this key's file lives: its stored key differs, so it is recomputed
    shutil.copy(use_b.file, use_a.file)
    g, use = cached_anchor(tiny, cfg, cache_dir=cache)
    assert not use.hit and use.reason.startswith("stored key differs") and "anchor" in use.reason
    assert g.meta["batches"] == 1 and g.meta["cache_key"]["anchor"]["batch_size"] == 2
    # and it was replaced by the right one: now a hit
    assert cached_anchor(tiny, cfg, cache_dir=cache)[1].hit

    # the same for JSON results, and a damaged file
    calls = []
    key = {"x": 1}
    assert cached_json("t", key, lambda: calls.append(1) or {"v": 1}, cache_dir=cache)[1].hit is False
    assert cached_json("t", key, lambda: calls.append(1) or {"v": 1}, cache_dir=cache)[1].hit is True
    p = cache / f"t-{digest(key)}.json"
    stored = json.loads(p.read_text())
    stored["key"] = {"x": 2}
    p.write_text(json.dumps(stored))
    value, use = cached_json("t", key, lambda: calls.append(1) or {"v": 3}, cache_dir=cache)
    assert not use.hit and value == {"v": 3} and use.reason.startswith("stored key differs")
    p.write_text("{not json")
    value, use = cached_json("t", key, lambda: calls.append(1) or {"v": 4}, cache_dir=cache)
    assert not use.hit and value == {"v": 4} and use.reason.startswith("unreadable")
    assert len(calls) == 3


def test_base_scores_cache(tmp_path):
    lm = load_model("tiny", lora=LoraSettings(rank=4), device="cpu")
    gen = load_mc(bundled_path("general", "eval"))[:3]
    dom = load_mc(bundled_path("finance", "eval"))[:3]
    cache = tmp_path / "cache"
    s1, u1 = cached_base_scores(lm, gen, dom, scorer="loglik", cache_dir=cache)
    s2, u2 = cached_base_scores(lm, gen, dom, scorer="loglik", cache_dir=cache)
    assert not u1.hit and u2.hit
    assert (s1.s_g, s1.s_d, s1.ci["s_g"]) == (s2.s_g, s2.s_d, s2.ci["s_g"])
    assert s2.per_item("s_g") == s1.per_item("s_g")  # per-item results kept: paired differences still work
    # other items, another scorer, other weights: misses
    changed = [MCItem(question=gen[0].question + "?", choices=gen[0].choices, answer=gen[0].answer, id=gen[0].id)]
    assert not cached_base_scores(lm, changed + gen[1:], dom, scorer="loglik", cache_dir=cache)[1].hit
    assert not cached_base_scores(lm, gen, dom, scorer="gen", cache_dir=cache)[1].hit
    with torch.no_grad():
        base_model(lm.model).model.embed_tokens.weight[0, 0] += 1.0
    assert not cached_base_scores(lm, gen, dom, scorer="loglik", cache_dir=cache)[1].hit


# --------------------------------------------------------------------------------------------------------------------
# The lesson on the tiny model


@pytest.fixture(scope="module")
def two_lessons(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesson")
    events = []
    cfg = LessonConfig(preset="smoke", remedy="dba", output_dir=str(root / "first"), cache_dir=str(root / "cache"))
    first = run_lesson(cfg, callback=events.append, command="pytest")
    second = run_lesson(cfg.replace(output_dir=str(root / "second")))
    return first, second, events, root


def test_lesson_record(two_lessons):
    rec, _, events, root = two_lessons
    assert rec["status"] == "completed" and rec["format"] == "dba-lesson" and rec["command"] == "pytest"
    assert [r["label"] for r in rec["runs"]] == ["direct", "dba"]
    steps = rec["run"]["steps"]
    for r in rec["runs"]:
        assert r["status"] == "completed"
        evals = [m for m in r["metrics"] if m["type"] == "eval"]
        assert [e["step"] for e in evals][0] == 0 and evals[-1]["step"] == steps and len(evals) >= 3
        for e in evals:  # every evaluation carries its intervals
            for k in ("s_g", "s_d", "s"):
                lo, hi = e["ci"][k]
                assert lo <= e[k] <= hi
        assert sum(m["type"] == "step" for m in r["metrics"]) == steps
    # the model's own words: every question answered by base, direct and the remedy
    assert len(rec["base"]["answers"]) == len(QUESTIONS)
    for r in rec["runs"]:
        assert len(r["answers"]) == len(QUESTIONS)
        assert all(isinstance(a["reply"], str) and isinstance(a["says_answer"], bool) for a in r["answers"])
    header, rows = answers_table(rec)
    assert header == ["question", "base (start)", "direct (end)", "dba (end)"] and len(rows) == len(QUESTIONS)
    assert "What is the capital of France?" in answers_markdown(rec)
    # the summary: plain words, verdicts, paired differences with intervals
    s = rec["summary"]
    assert "What happened" in s["text"] and "In its own words" in s["text"] and "noise" in s["text"]
    assert set(s["verdicts"]) == {"direct_forgot", "direct_learned", "remedy_held", "remedy_learned",
                                  "remedy_kept_more"}
    assert {"direct - base", "dba - base", "dba - direct"} <= set(s["differences"])
    assert not rec["cache"]["base"]["hit"] and not rec["cache"]["anchor"]["hit"]
    assert set(rec["timings"]) >= {"load", "base", "anchor", "runs", "total"}
    # progress events, in order
    phases = [e["phase"] for e in events if e.get("type") == "lesson"]
    assert phases[0] == "load" and phases[-1] == "done" and "anchor" in phases and "run" in phases
    assert any(e.get("type") == "step" and e.get("run") == "dba" for e in events)
    assert any(e.get("type") == "answers" and e.get("run") == "direct" for e in events)
    # the record is the lesson folder's lesson.json
    assert load_record(root / "first" / "lesson.json")["summary"] == s
    assert len(json.dumps(rec)) < 60_000


def test_second_lesson_uses_both_caches(two_lessons):
    first, second, _, _ = two_lessons
    assert second["cache"]["base"]["hit"] and second["cache"]["anchor"]["hit"]
    assert second["base"] == first["base"]  # the same base scores and answers
    assert "from the cache" in second["summary"]["text"]


def test_record_saves_loads_and_draws(two_lessons, tmp_path):
    rec = two_lessons[0]
    p = save_record(rec, tmp_path / "rec.json")
    back = load_record(p)
    assert back == json.loads(json.dumps(rec))
    figs = figures(back)
    assert set(figs) == {"scores", "plane", "loss"}
    gids = {a.get_gid() for ax in figs["scores"].axes for a in ax.get_children()}
    assert {"s_g:direct", "s_g:dba", "s_d:direct", "s_d:dba"} <= gids
    assert {"band:s_g:direct", "band:s_d:dba"} <= gids  # the 95 % intervals, drawn as bands
    # a file that is not a lesson record: one clear message
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(DBAError, match="not a lesson record"):
        load_record(tmp_path / "x.json")
    with pytest.raises(DBAError, match="not found"):
        load_record(tmp_path / "missing.json")


def test_lesson_config_refuses_a_remedy_that_is_not_one():
    for bad in ("direct", "wiseft", "dba-no-dc", "nope"):   # no training, direct itself, an ablation, unknown
        with pytest.raises(DBAError, match="remedy"):
            LessonConfig(remedy=bad)
    for good in ("mixture", "dba-update", "ewc", "l2sp", LESSON_REMEDY):
        LessonConfig(remedy=good)
    assert remedy_choices()[0] == LESSON_REMEDY and "direct" not in remedy_choices()


@pytest.mark.parametrize("remedy", ["l2sp", "ewc"])
def test_a_lesson_with_a_baseline_remedy(remedy, tmp_path):
    rec = run_lesson(LessonConfig(preset="smoke", remedy=remedy, output_dir=str(tmp_path / "l"),
                                  cache_dir=str(tmp_path / "cache")))
    assert rec["status"] == "completed" and [r["label"] for r in rec["runs"]] == ["direct", remedy]
    assert rec["remedy"]["name"] == remedy and rec["remedy"]["needs_anchor"] == (remedy == "ewc")
    assert (rec["cache"].get("anchor") is not None) == (remedy == "ewc")   # ĝ_G (and its Fisher) only for EWC
    assert "remedy" in rec["summary"]["text"].lower() or remedy in rec["summary"]["text"]
    # keep_weights False (the default): no weights, no checkpoint were written, only records
    assert not list((tmp_path / "l").rglob("*.safetensors")) and not list((tmp_path / "l").rglob("checkpoint"))


# --------------------------------------------------------------------------------------------------------------------
# The summary's verdicts, on hand-made records


def _eval(step: int, g: list[float], d: list[float]) -> dict:
    return {"type": "eval", "step": step, "s_g": sum(g) / len(g), "s_d": sum(d) / len(d),
            "detail": {"scorer": "gen", "general": {"n": len(g), "per_item": {"score": g, "id": None}},
                       "domain": {"n": len(d), "per_item": {"score": d, "id": None}}}}


def _record(direct_g, remedy_g, n=40) -> dict:
    base_g, d0, d1 = [1.0] * n, [0.0] * n, [1.0] * n
    return {"format": "dba-lesson", "version": 1, "questions": [], "remedy": {"label": "dba"},
            "base": {"eval": _eval(0, base_g, d0), "answers": []}, "timings": {"total": 1.0}, "cache": {},
            "runs": [{"label": lab, "status": "completed", "metrics": [_eval(0, base_g, d0), _eval(20, g, d1)]}
                     for lab, g in (("direct", direct_g), ("dba", remedy_g))]}


def test_summary_verdicts():
    n = 40
    forgot = [0.0] * 20 + [1.0] * 20       # −50 points: outside the noise
    one_less = [0.0] + [1.0] * (n - 1)     # one question: within the noise
    s = summarise(_record(forgot, one_less))
    v = s["verdicts"]
    assert v["direct_forgot"] and v["direct_learned"] and v["remedy_held"] and v["remedy_kept_more"]
    assert "**Direct fine-tuning forgot**" in s["text"] and "**The remedy (dba) held**" in s["text"]
    d = s["differences"]["direct - base"]["s_g"]
    assert d["estimate"] == pytest.approx(-0.5) and d["hi"] < 0

    s = summarise(_record(forgot, forgot))
    assert s["verdicts"]["remedy_held"] is False and "**The remedy (dba) did not hold**" in s["text"]
    assert s["verdicts"]["remedy_kept_more"] is False

    s = summarise(_record(one_less, one_less))
    assert s["verdicts"]["direct_forgot"] is False and "did not forget measurably" in s["text"]


# --------------------------------------------------------------------------------------------------------------------
# The shipped recorded lesson


def test_shipped_recorded_lesson_loads_and_draws():
    path = REPO / "app" / "recorded_lesson.json"
    if not path.exists():
        pytest.skip("no recorded lesson shipped yet (scripts/record_lesson.py writes it)")
    rec = load_record(path)
    assert rec["status"] == "completed" and rec["command"] and rec["machine"]["text"] and rec["created"]
    assert len(rec["runs"]) == 2 and all(r["answers"] for r in rec["runs"])
    assert path.stat().st_size < 100_000
    figs = figures(rec)
    assert figs["scores"].axes


# --------------------------------------------------------------------------------------------------------------------
# The app opens on a recorded lesson (public mode's default, or DBA_STUDIO_LESSON=recorded)


def test_the_page_opens_on_the_recorded_lesson(two_lessons, tmp_path, monkeypatch):
    import sys

    sys.path.insert(0, str(REPO))
    import app.teaching as teaching
    from app.settings import StudioSettings
    from app.ui import build_demo
    from dba.lesson import shareable

    assert StudioSettings(public=True).lesson_opens_on_recorded
    assert not StudioSettings().lesson_opens_on_recorded
    assert StudioSettings(lesson_opens="recorded").lesson_opens_on_recorded
    monkeypatch.setenv("DBA_STUDIO_LESSON", "recorded")
    monkeypatch.setenv("DBA_STUDIO_LESSON_PRESET", "smoke")
    s = StudioSettings.from_env()
    assert s.lesson_opens_on_recorded and s.lesson_preset_name == "smoke"

    rec = shareable(two_lessons[0])
    assert str(tmp_path) not in json.dumps(rec) and "/" not in rec["runs"][0]["run_dir"]
    path = save_record(rec, tmp_path / "recorded_lesson.json", compact=True)
    monkeypatch.setattr(teaching, "RECORDED_LESSON", path)
    settings = StudioSettings(model="tiny", preset_name="smoke", runs_root=tmp_path / "runs", lesson_opens="recorded")
    t = build_demo(settings).studio_tabs["lesson"]
    assert "RECORDED LESSON" in t.banner.value and "pytest" in t.banner.value  # the command that made it
    assert "What happened" in t.md.value and "What is the capital of France?" in t.answers.value
    assert t.scores.value is not None and t.plane.value is not None
    # live by default: nothing drawn until the lesson runs
    t = build_demo(StudioSettings(model="tiny", preset_name="smoke", runs_root=tmp_path / "runs2")).studio_tabs["lesson"]
    assert t.banner.value == "" and t.scores.value is None


def test_a_cancelled_lesson_stops_with_its_record_so_far(tmp_path):
    import threading

    from dba.lesson import LessonCancelled

    cancel = threading.Event()

    def on_event(ev):
        if ev.get("type") == "step":  # the first training step of direct: cancel
            cancel.set()

    cfg = LessonConfig(preset="smoke", output_dir=str(tmp_path / "l"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LessonCancelled, match="cancelled during direct") as e:
        run_lesson(cfg, callback=on_event, cancel=cancel)
    rec = e.value.record
    assert rec["status"] == "cancelled" and [r["label"] for r in rec["runs"]] == ["direct"]
    assert rec["runs"][0]["status"] == "cancelled" and rec["base"]["answers"]


def test_the_summary_points_to_the_study_when_the_remedy_is_a_dba_variant():
    from dba.lesson import STUDY_VERDICT

    rec = _record([1.0] * 30 + [0.0] * 10, [1.0] * 20 + [0.0] * 20)
    rec["remedy"] = {"label": "dba", "name": "dba-conservative"}
    assert STUDY_VERDICT in summarise(rec)["text"]
    rec["remedy"] = {"label": "dba", "name": "l2sp"}   # a baseline remedy: the study note is not its story
    assert STUDY_VERDICT not in summarise(rec)["text"]
