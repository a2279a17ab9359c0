"""Knowledge-injection sets for the four bundled domains (used by scripts/make_data.py).

Each domain module (make_data_<domain>.py) lists FACTS as
``(fact_id, [(question, statement), (question, statement)], [(eval question, answer, [3 wrong]), ...],
(held-out question, held-out answer))``. From each fact this module makes:

- 4 training rows: the 2 question/statement pairs, and 2 fill-in-the-blank rows (each statement with the fact's
  answer blanked, answered by the full statement) -- so every fact is stated 4 times, in 2 paraphrases;
- 1-2 multiple-choice eval items, worded differently from every training row (checked: content-word
  Jaccard similarity below 0.7 with every training question);
- 1 held-out pair (another wording and another answer text), for a held-out answer NLL (news_qa: for 40 of its
  64 facts).

Every row and item carries ``fact_id``. The wrong choices are placed so the right answer's position cycles 0-3.
"""
from __future__ import annotations

import importlib

from make_data import near_duplicate, norm, place

DOMAINS = ("finance", "medicine", "law", "news_qa")
PREFIX = {"finance": "fin", "medicine": "med", "law": "law", "news_qa": "news"}


def _blank(statement: str, answers: list[str]) -> str | None:
    """The statement with the first answer it contains replaced by ___ (case-insensitive), or None."""
    low = statement.lower()
    for a in answers:
        at = low.find(a.lower())
        if at >= 0:
            return statement[:at] + "___" + statement[at + len(a):]
    return None


def build(domain: str) -> dict:
    from dba.scores import choices_named

    mod = importlib.import_module(f"make_data_{domain}")
    pre = PREFIX[domain]
    train, items, held, problems = [], [], [], []
    seen_ids = set()
    k = 0
    for fact_id, pairs, evals, heldout in mod.FACTS:
        if fact_id in seen_ids:
            problems.append(f"{domain}: duplicate fact id {fact_id}")
        seen_ids.add(fact_id)
        answers = [a for _, a, _ in evals]
        rows = [{"instruction": q, "output": s, "fact_id": fact_id} for q, s in pairs]
        for _, s in pairs:
            b = _blank(s, answers)
            if b is None:
                problems.append(f"{domain}/{fact_id}: statement names no eval answer: {s!r}")
                continue
            rows.append({"instruction": f"Fill in the blank: {b}", "output": s, "fact_id": fact_id})
        train += rows
        for q, a, wrong in evals:
            choices, ans = place(a, list(wrong), k)
            k += 1
            items.append({"id": f"{pre}-{k:03d}", "question": q, "choices": choices, "answer": ans,
                          "category": fact_id, "fact_id": fact_id})
            covered = [r for r in rows if choices_named(r["output"], choices) == {ans}]
            if len(covered) < 2:
                problems.append(f"{domain}/{fact_id}: eval answer {a!r} is stated (alone among the choices) by "
                                f"{len(covered)} training rows, need >= 2")
        if heldout is not None:
            hq, ha = heldout
            held.append({"id": f"{pre}-h{len(held) + 1:03d}", "instruction": hq, "output": ha,
                         "fact_id": fact_id})

    train_q = [r["instruction"] for r in train]
    for it in items:
        hit = next((q for q in train_q if near_duplicate(it["question"], q, 0.7, containment=False)), None)
        if hit:
            problems.append(f"{domain}/{it['id']}: eval question {it['question']!r} ~ training row {hit!r}")
    for h in held:
        hit = next((q for q in train_q if near_duplicate(h["instruction"], q, 0.7, containment=False)), None)
        if hit:
            problems.append(f"{domain}/{h['id']}: held-out {h['instruction']!r} ~ training row {hit!r}")
        if norm(h["output"]) in {norm(r["output"]) for r in train}:
            problems.append(f"{domain}/{h['id']}: held-out answer repeats a training answer")
    return {"train": train, "eval": items, "heldout": held, "problems": problems, "n_facts": len(mod.FACTS)}
