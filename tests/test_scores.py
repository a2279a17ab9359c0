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
from dba.scores import (EvaluationError, Scores, choices_named, combine, delta, evaluate, harmonic_mean,
                        judge_reply, mc_prompt, score_generation, score_mc_loglik)

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
    assert evaluate(tiny.model, tiny.tokenizer, None, None).s is None
    with pytest.raises(EvaluationError):
        evaluate(tiny.model, tiny.tokenizer, general, domain, scorer="best")
