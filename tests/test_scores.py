"""Tests for dba.scores: the batched log-likelihood scorer against a hand computation, the generation judge, and
the score arithmetic. CPU only; the tiny random model for mechanics, the embedded default model where the answer
must make sense."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from dba import DataError, DBAError, load_model
from dba import scores as sc
from dba.scores import (EvaluationError, QAPair, Scores, choices_named, combine, delta, evaluate, finish_reply,
                        first_answer_line, harmonic_mean, judge_reply, load_qa_pairs, mc_prompt, paired_delta,
                        score_generation, score_mc_loglik, score_nll, scores_from_record, seed_intervals,
                        stop_token_ids)

try:
    from dba.data import MCItem
except ImportError:  # dba.data is written alongside; the scorers only read .question/.choices/.answer
    @dataclass
    class MCItem:
        question: str
        choices: list[str]
        answer: int
        id: str | None = None
        category: str | None = None


CAPITAL = MCItem("What is the capital of France?", ["Paris", "Rome", "Berlin", "Madrid"], 0)

# Choices of different token lengths (1 to several tokens), and different numbers of choices per item.
MIXED = [
    CAPITAL,
    MCItem("Which of these is a fruit?", ["a ripe banana from the market", "carrot", "Potatoes and leeks"], 0),
    MCItem("What is 2 + 2?", ["4", "22", "four hundred and six"], 0),
    MCItem("Name an ocean.", ["Pacific", "the Atlantic Ocean"], 1),
    MCItem("Which gas do plants take in?", ["carbon dioxide", "oxygen", "helium", "neon", "argon"], 0),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # On the shared 2-core test machine, torch's intra-op threads fighting other processes made these small forwards
    # ~10x slower than a single thread; restore the setting for the rest of the suite.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny", device="cpu")


@pytest.fixture(scope="module")
def default():
    return load_model("default", device="cpu")


def hand_logprobs(model, tokenizer, item) -> list[tuple[float, int]]:
    """(summed log-prob, n tokens) per choice, one unpadded forward per choice: the reference computation."""
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": item.question}], tokenize=False,
                                           add_generation_prompt=True)
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    out = []
    with torch.no_grad():
        for c in item.choices:
            cids = tokenizer(c, add_special_tokens=False).input_ids
            ids = torch.tensor([p + cids])
            lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            out.append((sum(lp[len(p) - 1 + k, t].item() for k, t in enumerate(cids)), len(cids)))
    return out


def _argmax(xs):
    return max(range(len(xs)), key=lambda j: (xs[j], -j))


# --------------------------------------------------------------------------------------------------------------------
# Log-likelihood scorer


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_batched_loglik_equals_hand_computation(tiny, batch_size):
    model, tok = tiny.model, tiny.tokenizer
    r = score_mc_loglik(model, tok, MIXED, batch_size=batch_size)
    assert r.n == len(MIXED)
    for item, lps, ns, pred, pred_norm in zip(MIXED, r.logprobs, r.n_tokens, r.predictions, r.predictions_norm):
        hand = hand_logprobs(model, tok, item)
        assert ns == [n for _, n in hand]
        assert lps == pytest.approx([lp for lp, _ in hand], abs=1e-4)
        assert pred == _argmax([lp for lp, _ in hand])
        assert pred_norm == _argmax([lp / n for lp, n in hand])
    assert len({n for ns in r.n_tokens for n in ns}) > 2, "the test items should have choices of several lengths"
    hits = sum(p == it.answer for p, it in zip(r.predictions, MIXED))
    hits_norm = sum(p == it.answer for p, it in zip(r.predictions_norm, MIXED))
    assert r.accuracy == hits / len(MIXED) and r.accuracy_norm == hits_norm / len(MIXED)


def test_loglik_same_without_output_head_trimming(tiny, monkeypatch):
    """The logits_to_keep shortcut is an optimisation only: the full-logits path gives the same scores."""
    fast = score_mc_loglik(tiny.model, tiny.tokenizer, MIXED, batch_size=3)
    monkeypatch.setattr(sc, "_accepts_logits_to_keep", lambda model: False)
    full = score_mc_loglik(tiny.model, tiny.tokenizer, MIXED, batch_size=3)
    for a, b in zip(fast.logprobs, full.logprobs):
        assert a == pytest.approx(b, abs=1e-5)


def test_loglik_through_peft_wrapper(tiny):
    """A freshly wrapped LoRA model (B = 0) scores exactly like its base; mode is restored after scoring."""
    from dba import LoraSettings

    lora = load_model("tiny", device="cpu", lora=LoraSettings(rank=4))
    lora.model.train()
    a = score_mc_loglik(lora.model, lora.tokenizer, MIXED[:3], batch_size=2)
    assert lora.model.training, "train mode must be restored after scoring"
    b = score_mc_loglik(tiny.model, tiny.tokenizer, MIXED[:3], batch_size=2)
    for x, y in zip(a.logprobs, b.logprobs):
        assert x == pytest.approx(y, abs=1e-5)


def test_default_model_knows_the_capital_of_france(default):
    r = score_mc_loglik(default.model, default.tokenizer, [CAPITAL])
    assert r.predictions == [0] and r.predictions_norm == [0] and r.accuracy == 1.0


class ForcedLM(torch.nn.Module):
    """A fake causal LM whose every next-token distribution puts nearly all mass on one token id."""

    def __init__(self, vocab: int, favourite: int):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the scorer a device to read
        self.vocab, self.favourite = vocab, favourite
        self.calls: list[tuple[int, bool]] = []  # (rows in the forward, was it in train mode)

    def forward(self, input_ids, attention_mask=None, **kw):
        self.calls.append((input_ids.shape[0], self.training))
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.favourite] = 20.0
        return SimpleNamespace(logits=logits)


def test_forced_answer_flips_the_prediction(tiny):
    """The scorer follows the model: a model that always says "Rome" gets the capital question wrong."""
    tok = tiny.tokenizer
    rome = tok("Rome", add_special_tokens=False).input_ids
    assert len(rome) == 1
    fake = ForcedLM(len(tok), rome[0])
    fake.train()
    r = score_mc_loglik(fake, tok, [CAPITAL, CAPITAL, CAPITAL], batch_size=2)
    assert r.predictions == [1, 1, 1] and r.predictions_norm == [1, 1, 1]
    assert r.accuracy == 0.0 and r.accuracy_norm == 0.0
    # Batched: one forward per 2 items holding all their choices (4 + 4, then 4), in eval mode; mode restored after.
    assert fake.calls == [(8, False), (4, False)]
    assert fake.training


def test_bad_items_raise_data_error(tiny):
    for bad in ([], [MCItem("q?", ["a", "b"], 2)], [MCItem("q?", [], 0)], [MCItem("q?", ["a", " "], 0)]):
        with pytest.raises(DataError):
            score_mc_loglik(tiny.model, tiny.tokenizer, bad)


def test_plain_prompt_without_chat_template(tiny):
    tok = SimpleNamespace(chat_template=None)
    assert mc_prompt(tok, "Why?") == "Question: Why?\nAnswer:"
    assert mc_prompt(tiny.tokenizer, "Why?").endswith("<|im_start|>assistant\n")
    assert "Why?" in mc_prompt(tiny.tokenizer, "Why?")


# --------------------------------------------------------------------------------------------------------------------
# Generation scorer


@pytest.mark.parametrize("reply, choices, answer, ok", [
    ("The answer is 8.", ["8", "18", "80"], 0, True),
    ("The answer is 18.", ["8", "18", "80"], 0, False),       # "8" does not match inside "18"
    ("The answer is 18.", ["8", "18", "80"], 1, True),
    ("It is 8 or 18.", ["8", "18", "80"], 0, False),          # names two choices
    ("THE CAPITAL IS PARIS", ["Paris", "Rome"], 0, True),     # case-insensitive
    ("Paris, not Rome.", ["Paris", "Rome"], 0, False),
    ("I don't know.", ["Paris", "Rome"], 0, False),
    ("Parisian food is good.", ["Paris", "Rome"], 0, False),  # whole words only
    ("The coupon is $50 a year.", ["$75", "$25", "$100", "$50"], 3, True),  # symbols at the edges
    ("The yield is 5%.", ["5%", "4%", "6%", "12%"], 0, True),
    ("The yield is 15%.", ["5%", "4%", "6%", "12%"], 0, False),
    ("It costs 5.5 dollars.", ["5", "6"], 0, False),          # not a piece of a longer number
    ("It is in New York.", ["New York", "York"], 0, True),    # "York" inside "New York" is not a second choice
    ("It is in York.", ["New York", "York"], 1, True),
    ("It is in New York.", ["New York", "York"], 1, False),
])
def test_judge_reply(reply, choices, answer, ok):
    assert judge_reply(reply, choices, answer) is ok


def test_choices_named():
    assert choices_named("8 and 18", ["8", "18", "80"]) == {0, 1}
    assert choices_named("nothing here", ["8", "18"]) == set()


def test_generation_on_default_model(default):
    items = [CAPITAL, MCItem("Which planet is known as the Red Planet?", ["Venus", "Mars", "Jupiter"], 1)]
    model, tok = default.model, default.tokenizer
    model.train()
    batched = score_generation(model, tok, items, max_new_tokens=6, batch_size=2)
    assert model.training
    single = [score_generation(model, tok, [it], max_new_tokens=6).replies[0] for it in items]
    assert batched.replies == single, "left-padded batched generation must match one-at-a-time generation"
    assert "Paris" in batched.replies[0] and batched.correct[0]
    assert batched.correct == [judge_reply(r, it.choices, it.answer) for r, it in zip(batched.replies, items)]
    assert batched.accuracy == sum(batched.correct) / 2 and batched.n == 2


# --------------------------------------------------------------------------------------------------------------------
# Combining


def test_harmonic_mean():
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(0.6, 0.3) == pytest.approx(0.4)        # 2·0.18/0.9
    assert harmonic_mean(1.0, 0.0) == 0.0


def test_combine():
    assert combine(0.8, 0.4) == pytest.approx(0.6)
    assert combine(0.8, 0.4, "loglik") == 0.8
    assert combine(0.8, 0.4, "gen") == 0.4
    assert combine(0.8, None, "loglik") == 0.8
    with pytest.raises(EvaluationError):
        combine(0.8, None, "mean")
    with pytest.raises(DBAError):
        combine(0.8, 0.4, "median")


def test_delta():
    a = Scores(s_g=0.5, s_d=0.75, s=0.6)
    b = Scores(s_g=0.625, s_d=0.25, s=0.35)
    assert delta(a, b) == pytest.approx({"s_g": -0.125, "s_d": 0.5, "s": 0.25})
    assert delta(Scores(None, 0.5, None), b) == {"s_g": None, "s_d": 0.25, "s": None}


def test_evaluate_on_tiny_model(tiny):
    general, domain = MIXED[:3], MIXED[2:]
    s = evaluate(tiny.model, tiny.tokenizer, general, domain, max_new_tokens=4)
    for v in (s.s_g, s.s_d, s.s):
        assert 0.0 <= v <= 1.0
    assert s.s == pytest.approx(harmonic_mean(s.s_g, s.s_d))
    g = s.detail["general"]
    assert g["n"] == 3 and s.s_g == pytest.approx((g["loglik"] + g["gen"]) / 2)

    # loglik only: no generation run; max_items keeps the first N; an empty set gives None and no S.
    s2 = evaluate(tiny.model, tiny.tokenizer, general, [], scorer="loglik", max_items=2)
    assert s2.detail["general"]["n"] == 2 and s2.detail["general"]["gen"] is None
    assert s2.s_g == s2.detail["general"]["loglik"]
    assert s2.s_d is None and s2.s is None and s2.detail["domain"] is None
    with pytest.raises(EvaluationError, match="Nothing to score"):
        evaluate(tiny.model, tiny.tokenizer, None, None)
    with pytest.raises(EvaluationError, match="Nothing to score"):
        evaluate(tiny.model, tiny.tokenizer, [], [], max_items=3)
    with pytest.raises(EvaluationError):
        evaluate(tiny.model, tiny.tokenizer, general, domain, scorer="best")
    with pytest.raises(EvaluationError):
        evaluate(tiny.model, tiny.tokenizer, general, domain, max_items=-1)


def test_eval_items_zero_scores_every_item(tiny):
    general, domain = MIXED[:4], MIXED[1:]
    for all_items in (0, None):
        s = evaluate(tiny.model, tiny.tokenizer, general, domain, scorer="loglik", max_items=all_items)
        assert s.detail["general"]["n"] == 4 and s.detail["domain"]["n"] == 4 and s.n_g == 4 and s.n_d == 4
        assert len(s.detail["general"]["per_item"]["score"]) == 4


def test_evaluate_keeps_items_and_intervals(tiny):
    import json

    general = [MCItem(it.question, it.choices, it.answer, id=f"g{k}") for k, it in enumerate(MIXED)]
    s = evaluate(tiny.model, tiny.tokenizer, general, MIXED[:3], max_new_tokens=3)
    g = s.detail["general"]
    per = g["per_item"]
    assert per["id"] == [f"g{k}" for k in range(5)] and s.detail["domain"]["per_item"]["id"] is None
    # per item: (loglik right + gen right) / 2 under the "mean" scorer; their mean is the score
    assert per["score"] == [(a + b) / 2 for a, b in zip(per["loglik"], per["gen"])]
    assert s.s_g == pytest.approx(sum(per["score"]) / 5)
    assert g["loglik"] == pytest.approx(sum(per["loglik"]) / 5)
    for k in ("s_g", "s_d", "s"):
        lo, hi = s.ci[k]
        assert lo <= getattr(s, k) + 1e-12 and getattr(s, k) <= hi + 1e-12
    assert s.ci["nll_g"] is None and s.nll_g is None
    # a record (metrics.jsonl / base.json) gives the same Scores back, intervals included
    back = scores_from_record(json.loads(json.dumps(s.to_record())))
    assert (back.s_g, back.s_d, back.s, back.n_g, back.n_d) == (s.s_g, s.s_d, s.s, 5, 3)
    assert back.ci == s.ci
    # the raw record train.py writes ({"s_g", "s_d", "s", "detail"}) is enough too
    raw = scores_from_record({"s_g": s.s_g, "s_d": s.s_d, "s": s.s, "detail": s.detail})
    assert raw.ci == s.ci and raw.n_g == 5
    # a model against itself: every difference is exactly 0 and within noise
    d = paired_delta(s, back)
    for k in ("s_g", "s_d", "s"):
        assert d[k].estimate == 0 and d[k].lo == 0 and d[k].hi == 0 and d[k].within_noise
    assert d["nll_g"] is None


def _fake_scores(general, domain, ids=True):
    def one(vals, prefix):
        return {"n": len(vals), "per_item": {"id": [f"{prefix}{k}" for k in range(len(vals))] if ids else None,
                                             "score": list(vals)}}
    g, d = sum(general) / len(general), sum(domain) / len(domain)
    return Scores(g, d, harmonic_mean(g, d), detail={"general": one(general, "g"), "domain": one(domain, "d")})


def test_paired_delta_and_seeds():
    base = _fake_scores([1.0] * 30 + [0.0] * 30, [0.0] * 40)
    forgot = _fake_scores([1.0] * 10 + [0.0] * 50, [1.0] * 30 + [0.0] * 10)
    d = paired_delta(forgot, base)
    assert d["s_g"].estimate == pytest.approx(delta(forgot, base)["s_g"]) and d["s_g"].hi < 0
    assert d["s_d"].estimate == pytest.approx(0.75) and d["s_d"].lo > 0
    assert d["s"].estimate == pytest.approx(forgot.s - base.s)
    # items matched by id, not position: reversing one side's order changes nothing
    rev = Scores(forgot.s_g, forgot.s_d, forgot.s, detail={
        k: {"n": v["n"], "per_item": {"id": v["per_item"]["id"][::-1], "score": v["per_item"]["score"][::-1]}}
        for k, v in forgot.detail.items()})
    assert paired_delta(rev, base)["s_g"] == d["s_g"]
    # different items are refused
    other = _fake_scores([1.0] * 59, [0.0] * 40)
    with pytest.raises(EvaluationError):
        paired_delta(other, base)
    # seeds: pooled means, seed x item intervals; three identical seeds give the one-run estimate
    pooled = seed_intervals([forgot, forgot, forgot])
    assert pooled["s_g"].estimate == pytest.approx(forgot.s_g) and pooled["s_g"].n_seeds == 3
    assert paired_delta([forgot, forgot], base)["s_g"].estimate == pytest.approx(d["s_g"].estimate)
    assert paired_delta([forgot, forgot], base)["s_g"].method == "paired seed x item bootstrap"
    # records without per-item results (older runs) give no interval, not an error
    assert paired_delta(Scores(0.5, 0.5, 0.5), base) == {"s_g": None, "s_d": None, "nll_g": None, "nll_d": None,
                                                         "s": None}


# --------------------------------------------------------------------------------------------------------------------
# Fast scoring == plain scoring


@pytest.fixture(scope="module")
def noisy_tiny():
    """The tiny model with large random weights: diverse, confident tokens (the plain tiny model only says "\n")."""
    lm = load_model("tiny", device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in lm.model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return lm


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_fast_loglik_equals_plain(noisy_tiny, batch_size):
    model, tok = noisy_tiny.model, noisy_tiny.tokenizer
    items = MIXED + [MCItem("Is the sky blue on a clear day?", ["yes", "no"], 0)]
    fast = score_mc_loglik(model, tok, items, batch_size=batch_size, fast=True)
    plain = score_mc_loglik(model, tok, items, batch_size=batch_size, fast=False)
    for a, b, it in zip(fast.logprobs, plain.logprobs, items):
        assert a == pytest.approx(b, abs=1e-4)
        assert b == pytest.approx([lp for lp, _ in hand_logprobs(model, tok, it)], abs=1e-4)
    assert fast.predictions == plain.predictions and fast.predictions_norm == plain.predictions_norm


def test_fast_path_is_taken(noisy_tiny, monkeypatch):
    """The fast path really runs on a transformers model (a silent fall-back would hide a regression)."""
    built = []
    real = sc._SharedPrefix.build.__func__

    def spy(cls, *a, **k):
        built.append(real(cls, *a, **k))
        return built[-1]
    monkeypatch.setattr(sc._SharedPrefix, "build", classmethod(spy))
    score_mc_loglik(noisy_tiny.model, noisy_tiny.tokenizer, MIXED[:2])
    assert built and built[0] is not None and len(built[0].ids) > 10  # the system prompt and "<|im_start|>user\n"
    # ... and through a PEFT LoRA wrapper (the model a run evaluates during training), quantised or not
    from dba import LoraSettings

    lora = load_model("tiny", device="cpu", lora=LoraSettings(rank=4))
    score_mc_loglik(lora.model, lora.tokenizer, MIXED[:2])
    assert built[-1] is not None and built[-1].ids == built[0].ids


def test_fast_generation_equals_plain(noisy_tiny):
    model, tok = noisy_tiny.model, noisy_tiny.tokenizer
    items = MIXED + [CAPITAL]
    fast = score_generation(model, tok, items, max_new_tokens=12, batch_size=4, fast=True)
    plain = score_generation(model, tok, items, max_new_tokens=12, batch_size=4, fast=False)
    assert fast.replies == plain.replies and fast.correct == plain.correct
    assert len(set(fast.replies)) > 2, "the noisy model should say different things"
    # raw greedy tokens, no stop rule at all: identical, and equal to one-at-a-time generation
    prompts = [sc._prompt_ids(tok, it.question) for it in items]
    pre = sc._SharedPrefix.build(model, prompts, torch.device("cpu"))
    order = list(range(len(items)))
    with torch.no_grad():
        raw_fast = sc._generate_fast(model, tok, pre, prompts, order, 3, sc._pad_id(tok), 10, set())
        raw_plain = sc._generate_plain(model, prompts, order, 3, sc._pad_id(tok), 10, set(), torch.device("cpu"))
    # without stop ids a fast row still stops at a line break after text (the reply is complete there)
    for f, p in zip(raw_fast, raw_plain):
        assert f == p[:len(f)]
        assert len(f) == 10 or sc._reply_done(tok, f, set())


def test_generation_stop_rule(noisy_tiny):
    tok = noisy_tiny.tokenizer
    stops = stop_token_ids(noisy_tiny.model, tok)
    assert tok.convert_tokens_to_ids("<|im_end|>") in stops and tok.eos_token_id in stops
    assert first_answer_line("\n\n  Paris.\nRome is also nice.") == "Paris."
    assert first_answer_line("Paris") == "Paris"
    paris, nl = tok("Paris.", add_special_tokens=False).input_ids, tok("\n", add_special_tokens=False).input_ids
    rome = tok("Rome", add_special_tokens=False).input_ids
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert finish_reply(tok, nl + paris + nl + rome, stops) == "Paris."
    assert finish_reply(tok, paris + [im_end] + rome, stops) == "Paris."
    assert sc._reply_done(tok, paris + [im_end], stops) and sc._reply_done(tok, paris + nl, stops)
    assert not sc._reply_done(tok, nl, stops) and not sc._reply_done(tok, paris, stops)


def test_fast_generation_drops_finished_rows(noisy_tiny, monkeypatch):
    """A batch's rows stop one by one and later forwards only compute the rest; all stopped -> no more forwards."""
    model, tok = noisy_tiny.model, noisy_tiny.tokenizer
    rows = []
    real = type(model).forward

    def counting(self, *a, **k):
        rows.append(k["input_ids"].shape)
        return real(self, *a, **k)
    monkeypatch.setattr(type(model), "forward", counting)
    r = score_generation(model, tok, MIXED, max_new_tokens=24, batch_size=5)
    decode = [s[0] for s in rows if s[1] == 1]
    assert decode == sorted(decode, reverse=True), "rows only leave the batch"
    assert len(rows) <= 2 + 23
    assert len(r.replies) == 5


# --------------------------------------------------------------------------------------------------------------------
# Held-out answer NLL


def test_nll_per_token_equals_hand_computation(noisy_tiny, tmp_path):
    import json
    import math

    model, tok = noisy_tiny.model, noisy_tiny.tokenizer
    f = tmp_path / "heldout.jsonl"
    rows = [{"id": "a", "question": "What is the capital of France?", "answer": "Paris is the capital of France."},
            {"id": "b", "instruction": "Name a primary colour.", "output": "Red"},
            {"prompt": "What do bees make?", "response": "Bees make honey from nectar."}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pairs = load_qa_pairs(f)
    assert [p.id for p in pairs] == ["a", "b", None] and pairs[1].answer == "Red"
    r = score_nll(model, tok, pairs, batch_size=2)
    plain = score_nll(model, tok, pairs, batch_size=2, fast=False)
    hand = []
    for p in pairs:
        (lp, n), = hand_logprobs(model, tok, MCItem(p.prompt[0]["content"], [p.answer], 0))
        hand.append(-lp / n)
    assert r.per_item == pytest.approx(hand, abs=1e-4) and plain.per_item == pytest.approx(hand, abs=1e-4)
    assert r.nll == pytest.approx(sum(hand) / 3, abs=1e-4) and r.n == 3 and all(math.isfinite(x) for x in hand)
    assert r.n_tokens == [len(tok(p.answer, add_special_tokens=False).input_ids) for p in pairs]
    # in evaluate: logged beside S_G / S_D, with an interval; NLL alone (no MC set) is a valid request
    s = evaluate(model, tok, MIXED[:2], None, scorer="loglik", general_nll=f, domain_nll=pairs[:2])
    assert s.nll_g == pytest.approx(r.nll, abs=1e-4) and s.detail["general"]["nll"]["id"] is None
    assert s.nll_d == pytest.approx(sum(hand[:2]) / 2, abs=1e-4) and s.s_d is None and s.detail["domain"]["n"] == 0
    assert s.ci["nll_g"][0] <= s.nll_g <= s.ci["nll_g"][1]
    only = evaluate(model, tok, None, None, general_nll=pairs)
    assert only.s_g is None and only.nll_g == pytest.approx(r.nll, abs=1e-4)
    d = paired_delta(s, s)
    assert d["nll_g"].estimate == 0 and d["nll_d"].within_noise


def test_qa_pairs_refuse_bad_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError):
        load_qa_pairs(empty)
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "just prose"}\n')
    with pytest.raises(DataError, match="row 1"):
        load_qa_pairs(text)
    with pytest.raises(DataError):
        score_nll(None, None, [])
    assert isinstance(QAPair([{"role": "user", "content": "q"}], "a"), QAPair)
