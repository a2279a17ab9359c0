"""Write the bundled evaluation and training files under data_samples/ (CC0, see data_samples/README.md).

    .venv/bin/python scripts/make_data.py            # writes every generated file
    .venv/bin/python scripts/make_data.py --check    # only checks (no file written): exit 1 on a problem

What it writes:

- ``data_samples/general/eval.jsonl``: the general multiple-choice set (the 157 hand-written items of the first
  release, then items generated from checked lists: arithmetic, units, shapes, opposites, irregular past tenses and
  plurals, capitals, chemical symbols, and hand-written science, history, language, animals and everyday items).
- ``data_samples/general/heldout_pairs.jsonl``: general instruction/output pairs that are in neither the anchor
  (``general/train.jsonl``) nor any domain training corpus, for a held-out answer NLL.
- ``data_samples/domains/<d>/{train,eval,heldout_pairs}.jsonl`` for finance, medicine, law and news_qa: knowledge
  injection sets. Each *fact* is stated by 4 training rows (2 questions answered by 2 paraphrased statements, and 2
  fill-in-the-blank rows), asked by 1-2 multiple-choice items worded differently, and by 1 held-out pair.

The general anchor corpus ``general/train.jsonl`` is not generated here (it is hand-written and kept as it was).
Everything is deterministic (no randomness except a seeded shuffle of the wrong choices' positions).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data_samples"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

STOP = set("""a an the of in on at to for and or is are was were be been being do does did what which who whom whose
when where why how that this these those it its with by from as into than then so if not no you your i me my we our
they their them he she his her one s about there has have had can could would should will shall may might many much
called call name named word""".split())


def norm(text: str) -> str:
    """Lower-case words and numbers only: what two questions share when they differ only in punctuation/case."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def content_words(text: str) -> frozenset[str]:
    """Words of a question that carry its content (stop-words dropped, a plural 's' stripped)."""
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in STOP:
            continue
        if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.add(w)
    return frozenset(out)


def near_duplicate(a: str, b: str, threshold: float = 0.8, containment: bool = True) -> bool:
    """Same normalised text; or content-word sets with Jaccard similarity >= ``threshold``; or the content words of
    one (at least 2 of them) all inside the other's, which has at most 2 more ("capital Ghana" inside "Which city
    is the capital of Ghana?"),
    unless ``containment`` is False (a domain eval question may well mention the term a training question asks
    about; what it must not do is copy the training question's wording)."""
    if norm(a) == norm(b):
        return True
    ca, cb = content_words(a), content_words(b)
    if not ca or not cb:
        return False
    small, large = sorted((ca, cb), key=len)
    if containment and len(small) >= 2 and small <= large and len(large) <= len(small) + 2:
        return True
    return len(ca & cb) / len(ca | cb) >= threshold


def place(correct: str, wrong: list[str], position: int) -> tuple[list[str], int]:
    """Four choices with the correct one at ``position`` (0-3), the wrong ones in their given order."""
    if len(wrong) != 3:
        raise ValueError(f"need 3 wrong choices for {correct!r}, got {wrong}")
    choices = list(wrong)
    choices.insert(position % 4, correct)
    return choices, position % 4


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_items(items: list[dict], where: str) -> list[str]:
    """Problems of a multiple-choice set: duplicate ids/questions/choices, a choice that a free reply naming it would
    not single out (see dba.scores.choices_named), a bad answer index."""
    from dba.scores import choices_named

    problems = []
    ids, qs = set(), set()
    for it in items:
        tag = f"{where}:{it['id']}"
        if it["id"] in ids:
            problems.append(f"{tag}: duplicate id")
        ids.add(it["id"])
        if norm(it["question"]) in qs:
            problems.append(f"{tag}: duplicate question {it['question']!r}")
        qs.add(norm(it["question"]))
        ch = it["choices"]
        if len(ch) != 4 or len({c.strip().lower() for c in ch}) != 4:
            problems.append(f"{tag}: needs 4 distinct choices: {ch}")
        if not (isinstance(it["answer"], int) and 0 <= it["answer"] < len(ch)):
            problems.append(f"{tag}: bad answer index")
        for j, c in enumerate(ch):
            if choices_named(c, ch) != {j}:
                problems.append(f"{tag}: choice {c!r} is not singled out by its own text among {ch}")
    return problems


def interleave_by_category(items: list[dict]) -> list[dict]:
    """Round-robin over the categories (in order of first appearance), keeping each category's own order: the first
    N items of the file (``--eval-items N``) then span every category instead of being N geography questions."""
    groups: dict[str, list[dict]] = {}
    for it in items:
        groups.setdefault(it.get("category", ""), []).append(it)
    out, queues = [], [list(g) for g in groups.values()]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="check only; write nothing")
    args = ap.parse_args(argv)

    import make_data_domains
    import make_data_general

    anchor = read_jsonl(DATA / "general" / "train.jsonl")
    anchor_q = [r["instruction"] for r in anchor]

    domains = {d: make_data_domains.build(d) for d in make_data_domains.DOMAINS}
    domain_train_q = [r["instruction"] for d in domains.values() for r in d["train"]]

    gen_eval, gen_pairs, dropped = make_data_general.build(anchor_q, domain_train_q)
    gen_eval = interleave_by_category(gen_eval)
    problems = check_items(gen_eval, "general")
    for d, sets in domains.items():
        problems += check_items(sets["eval"], d)
        problems += sets["problems"]
    for line in dropped:
        print("dropped (near an anchor/training question):", line)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"general: {len(gen_eval)} eval items, {len(gen_pairs)} held-out pairs")
    for d, sets in domains.items():
        print(f"{d}: {sets['n_facts']} facts, {len(sets['train'])} training rows, {len(sets['eval'])} eval items, "
              f"{len(sets['heldout'])} held-out pairs")
    if args.check:
        return 0
    write_jsonl(DATA / "general" / "eval.jsonl", gen_eval)
    write_jsonl(DATA / "general" / "heldout_pairs.jsonl", gen_pairs)
    for d, sets in domains.items():
        folder = DATA / "domains" / d
        write_jsonl(folder / "train.jsonl", sets["train"])
        write_jsonl(folder / "eval.jsonl", sets["eval"])
        write_jsonl(folder / "heldout_pairs.jsonl", sets["heldout"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
