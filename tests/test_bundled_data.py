"""The bundled data sets (data_samples/): they load with the library's loaders, are the size the study needs, hold
no duplicate or ambiguous choices, keep evaluation apart from training, and every domain eval fact is taught by
at least two training rows. Fast (CPU, tokenizer only)."""
from __future__ import annotations

import collections
import json
import re
import sys
import warnings
from pathlib import Path

import pytest

from dba.data import BUNDLED_DOMAINS, bundled_path, data_samples_dir, load_corpus, load_mc, read_rows
from dba.models import DEFAULT_MODEL_NAME, cache_dir
from dba.scores import choices_named

ROOT = data_samples_dir()
GENERAL = ROOT / "general"
DOMAINS = {d: ROOT / "domains" / d for d in BUNDLED_DOMAINS}
STUDY_MAX_LENGTH = 128  # the study regime's max_length: no training row may be cut there

STOP = set("""a an the of in on at to for and or is are was were be been do does did what which who when where why
how that this these those it its with by from as into than so if not no you your i me my we our they their them he
she his her one s about there has have had can could would should will may many much called call name named word
""".split())


@pytest.fixture(scope="module")
def tok():
    folder = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if not (folder / "tokenizer.json").exists():
        pytest.skip(f"default tokenizer not converted yet ({folder}); run dba.load_model('default') once")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP}


def jaccard(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


def training_instructions() -> list[str]:
    out = [r["instruction"] for r in rows(GENERAL / "train.jsonl")]
    for folder in DOMAINS.values():
        out += [r["instruction"] for r in rows(folder / "train.jsonl")]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Loading and sizes


@pytest.mark.parametrize("name", ["general", *BUNDLED_DOMAINS])
def test_training_and_heldout_files_load_without_truncation(tok, name):
    folder = GENERAL if name == "general" else DOMAINS[name]
    for path in (folder / "train.jsonl", folder / "heldout_pairs.jsonl"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a truncation warning fails the test
            corpus = load_corpus(path, tok, max_length=STUDY_MAX_LENGTH)
        assert corpus.kind == "instruction" and corpus.n_truncated == 0, path
        assert len(corpus) == len(read_rows(path))
    assert bundled_path(name, "train") == folder / "train.jsonl"


@pytest.mark.parametrize("name,min_items,min_pairs", [("general", 400, 100)]
                         + [(d, 60, 30) for d in BUNDLED_DOMAINS])
def test_sizes(name, min_items, min_pairs):
    folder = GENERAL if name == "general" else DOMAINS[name]
    items = load_mc(bundled_path(name, "eval"))
    assert len(items) >= min_items
    assert len(rows(folder / "heldout_pairs.jsonl")) >= min_pairs


@pytest.mark.parametrize("name", ["general", *BUNDLED_DOMAINS])
def test_choices_are_four_distinct_and_each_names_only_itself(name):
    items = load_mc(bundled_path(name, "eval"))
    assert len({it.id for it in items}) == len(items), "duplicate ids"
    assert len({norm(it.question) for it in items}) == len(items), "duplicate questions"
    positions = collections.Counter()
    for it in items:
        assert len(it.choices) == 4, it.id
        assert len({c.strip().lower() for c in it.choices}) == 4, f"{it.id}: duplicate choices {it.choices}"
        assert 0 <= it.answer < 4
        positions[it.answer] += 1
        for j, c in enumerate(it.choices):
            # A free reply that is exactly this choice must be judged as naming it and no other.
            assert choices_named(c, it.choices) == {j}, f"{it.id}: {c!r} among {it.choices}"
        assert it.category, f"{it.id}: no category"
    # The right answer's position is spread over 0-3 (no position bias to exploit).
    assert min(positions.values()) >= 0.15 * len(items), positions


def test_general_eval_covers_varied_categories():
    cats = collections.Counter(it.category for it in load_mc(bundled_path("general", "eval")))
    assert len(cats) >= 8 and max(cats.values()) <= 0.3 * sum(cats.values()), cats


# ---------------------------------------------------------------------------------------------------------------
# Evaluation kept apart from training


def test_no_general_eval_question_in_the_anchor_corpus():
    anchor = [r["instruction"] for r in rows(GENERAL / "train.jsonl")]
    anchor_norm = {norm(q) for q in anchor}
    for it in load_mc(bundled_path("general", "eval")):
        assert norm(it.question) not in anchor_norm, it.question
        close = [q for q in anchor if jaccard(it.question, q) >= 0.8]
        assert not close, f"{it.question!r} is a near-duplicate of anchor row {close[0]!r}"


def test_no_heldout_pair_in_any_training_corpus():
    train_q = training_instructions()
    train_norm = {norm(q) for q in train_q}
    train_out = {norm(r["output"]) for f in [GENERAL, *DOMAINS.values()] for r in rows(f / "train.jsonl")}
    for folder in [GENERAL, *DOMAINS.values()]:
        for pair in rows(folder / "heldout_pairs.jsonl"):
            q = pair["instruction"]
            assert norm(q) not in train_norm, q
            close = [t for t in train_q if jaccard(q, t) >= 0.8]
            assert not close, f"held-out {q!r} ~ training row {close[0]!r}"
            assert norm(pair["output"]) not in train_out, f"held-out answer of {q!r} is a training answer"


@pytest.mark.parametrize("domain", BUNDLED_DOMAINS)
def test_domain_eval_words_no_training_question(domain):
    train_q = [r["instruction"] for r in rows(DOMAINS[domain] / "train.jsonl")]
    for it in load_mc(bundled_path(domain, "eval")):
        assert max(jaccard(it.question, q) for q in train_q) < 0.7, it.question


@pytest.mark.parametrize("domain", BUNDLED_DOMAINS)
def test_every_domain_eval_fact_is_taught_by_two_training_rows(domain):
    train = rows(DOMAINS[domain] / "train.jsonl")
    by_fact = collections.defaultdict(list)
    for r in train:
        assert r.get("fact_id"), r
        assert "input" not in r, "domain facts are trained closed-book (no passage in the prompt)"
        by_fact[r["fact_id"]].append(r)
    for raw in rows(DOMAINS[domain] / "eval.jsonl"):
        teach = [r for r in by_fact[raw["fact_id"]] if choices_named(r["output"], raw["choices"]) == {raw["answer"]}]
        assert len(teach) >= 2, f"{raw['id']}: answer stated (alone among the choices) by {len(teach)} rows"
    # Each fact is stated by several training rows (knowledge injection needs paraphrases).
    assert min(len(v) for v in by_fact.values()) >= 4


# ---------------------------------------------------------------------------------------------------------------
# The generator reproduces the committed files


def test_committed_files_are_what_the_generator_writes(tmp_path, monkeypatch):
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))
    for mod in [m for m in sys.modules if m.startswith("make_data")]:
        del sys.modules[mod]
    import make_data

    monkeypatch.setattr(make_data, "DATA", tmp_path / "data_samples")
    (tmp_path / "data_samples" / "general").mkdir(parents=True)
    (tmp_path / "data_samples" / "general" / "train.jsonl").write_bytes((GENERAL / "train.jsonl").read_bytes())
    assert make_data.main([]) == 0
    written = sorted(p.relative_to(tmp_path / "data_samples") for p in (tmp_path / "data_samples").rglob("*.jsonl"))
    assert len(written) == 1 + 2 + 3 * len(BUNDLED_DOMAINS)
    for rel in written:
        assert (tmp_path / "data_samples" / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
