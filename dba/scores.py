"""Evaluation: the scores S_G (general knowledge kept), S_D (domain knowledge gained) and S (their harmonic mean).

Each evaluation set is a list of multiple-choice items (``dba.data.MCItem``: ``question``, ``choices``, ``answer``;
only those three attributes are read). Two scorers look at a set:

- **log-likelihood** (:func:`score_mc_loglik`): the model reads the question (as a chat user turn, see
  :func:`mc_prompt`) and we compare the log-probability it gives to each choice as its reply. Two variants are
  reported: the sum of the choice's token log-probs (``accuracy``) and their mean per token (``accuracy_norm``, which
  does not favour short choices). Cheap, deterministic, and sees knowledge the model cannot yet put into words.
- **generation** (:func:`score_generation`): the model answers freely (greedy), and the reply is correct when it names
  the right choice and no other (:func:`judge_reply`). This is what a user sees.

A set's score is formed from the two by :func:`combine` (``"mean"`` by default, see there for why), S_G on general
items, S_D on domain items, and S = 2·S_G·S_D / (S_G + S_D) (:func:`harmonic_mean`), which is high only when the model
learned the domain *and* kept its general knowledge. :func:`evaluate` does all of it; :func:`delta` compares to a base.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from .errors import DataError, DBAError, EvaluationError

if TYPE_CHECKING:  # dba.data is written alongside this module; only its MCItem's shape is used here
    from .data import MCItem

SCORERS = ("mean", "loglik", "gen")


# --------------------------------------------------------------------------------------------------------------------
# Prompts and tokens


def _has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def mc_prompt(tokenizer, question: str) -> str:
    """The question as a user turn through the tokenizer's chat template, ending with the generation prompt.

    Without a chat template (a base model): ``"Question: {question}\\nAnswer:"``.
    """
    if _has_chat_template(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
    return f"Question: {question}\nAnswer:"


def _prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of :func:`mc_prompt`."""
    # A chat template writes its own BOS/special tokens into the text; adding them again would double the BOS
    # (e.g. Llama 3). A plain prompt gets the tokenizer's usual special tokens, as in pre-training.
    return list(tokenizer(mc_prompt(tokenizer, question), add_special_tokens=not _has_chat_template(tokenizer))
                .input_ids)


def _choice_ids(tokenizer, choice: str) -> list[int]:
    """Token ids of a choice as the reply that follows :func:`mc_prompt`."""
    # After a chat generation prompt ("...assistant\n") the reply starts a fresh line: no leading space. After the
    # plain "Answer:" a model writes " Paris", so the choice is scored with its leading space there.
    text = choice if _has_chat_template(tokenizer) else " " + choice
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def _check_items(items: Sequence[Any], what: str = "evaluation") -> None:
    """A :class:`DataError` that names the item, for shapes the scorers cannot handle."""
    if not items:
        raise DataError(f"The {what} set holds no items.")
    for i, it in enumerate(items):
        name = getattr(it, "id", None) or f"#{i}"
        choices = getattr(it, "choices", None)
        if not isinstance(getattr(it, "question", None), str) or not choices:
            raise DataError(f"Item {name}: needs a question (text) and a non-empty list of choices.")
        if any(not isinstance(c, str) or not c.strip() for c in choices):
            raise DataError(f"Item {name}: every choice must be a non-empty string.")
        ans = getattr(it, "answer", None)
        if not isinstance(ans, int) or isinstance(ans, bool) or not 0 <= ans < len(choices):
            raise DataError(f"Item {name}: answer must be an index into its {len(choices)} choices, got {ans!r}.")


def _model_device(model, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    return next(model.parameters()).device


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


class _eval_mode:
    """Put the model in eval mode (no dropout) for the block and restore its previous mode afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()
        return False


def _accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM's forward can skip the output head on positions we do not score."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------------------------
# Log-likelihood scorer


@dataclass
class MCResult:
    """Log-likelihood scores of one multiple-choice set."""

    accuracy: float
    """Share of items whose highest-scoring choice, by summed token log-prob, is the answer."""
    accuracy_norm: float
    """The same with the length-normalised score (mean log-prob per choice token)."""
    predictions: list[int]
    """Chosen index per item, by summed log-prob (first index on ties)."""
    predictions_norm: list[int]
    """Chosen index per item, by mean log-prob per token."""
    n: int
    """Number of items scored."""
    logprobs: list[list[float]] = field(default_factory=list)
    """Summed log-prob of each choice given the prompt, per item (for inspection and tests)."""
    n_tokens: list[list[int]] = field(default_factory=list)
    """Number of tokens of each choice, per item (``logprobs / n_tokens`` is the normalised score)."""


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda j: (xs[j], -j))  # highest; first one on ties


@torch.no_grad()
def score_mc_loglik(model, tokenizer, items: Sequence["MCItem"], *, batch_size: int = 16,
                    device=None) -> MCResult:
    """Score multiple-choice items by the log-probability the model gives each choice as its reply to the question.

    The score of a choice is the sum of log p(token | prompt, earlier choice tokens) over the choice's tokens
    (``tokenizer(choice, add_special_tokens=False)``, appended to the prompt's tokens). ``batch_size`` items go into
    one forward pass together: every (prompt + choice) sequence of those items, right-padded with an attention mask,
    so the result equals scoring each sequence on its own. The model is in eval mode while scoring and is put back
    in train mode afterwards if it was.
    """
    _check_items(items)
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}.")
    dev = _model_device(model, device)
    pad = _pad_id(tokenizer)
    keep_ok = _accepts_logits_to_keep(model)

    prompts = [_prompt_ids(tokenizer, it.question) for it in items]
    choices = [[_choice_ids(tokenizer, c) for c in it.choices] for it in items]
    logprobs: list[list[float]] = [[0.0] * len(it.choices) for it in items]

    # Items with similar prompt lengths share a batch, so little of each forward is padding.
    order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))
    with _eval_mode(model):
        for start in range(0, len(order), batch_size):
            rows = [(i, j) for i in order[start:start + batch_size] for j in range(len(choices[i]))]
            seqs = [prompts[i] + choices[i][j] for i, j in rows]
            L = max(len(s) for s in seqs)
            ids = torch.full((len(rows), L), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), L), dtype=torch.long)
            # target[r, t] is the token predicted at position t (the one at t+1) when it is a choice token, else -1.
            target = torch.full((len(rows), L), -1, dtype=torch.long)
            for r, ((i, j), s) in enumerate(zip(rows, seqs)):
                ids[r, :len(s)] = torch.tensor(s)
                mask[r, :len(s)] = 1
                p = len(prompts[i])
                target[r, p - 1:len(s) - 1] = torch.tensor(choices[i][j])
            # Only positions from the shortest prompt's last token on predict choice tokens: with right padding they
            # are the last `keep` positions, so the output head (a vocab-sized matmul) can skip the rest.
            keep = L - (min(len(prompts[i]) for i, _ in rows) - 1)
            kw: dict[str, Any] = {"logits_to_keep": keep} if keep_ok else {}
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, **kw)
            logits = out.logits[:, -keep:, :].float()
            tgt = target[:, -keep:].to(logits.device)
            valid = tgt >= 0
            lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            sums = (lp * valid).sum(dim=1).tolist()
            for r, (i, j) in enumerate(rows):
                logprobs[i][j] = sums[r]

    n_tokens = [[len(c) for c in cs] for cs in choices]
    preds = [_argmax(lps) for lps in logprobs]
    preds_norm = [_argmax([lp / n for lp, n in zip(lps, ns)]) for lps, ns in zip(logprobs, n_tokens)]
    n = len(items)
    return MCResult(
        accuracy=sum(p == it.answer for p, it in zip(preds, items)) / n,
        accuracy_norm=sum(p == it.answer for p, it in zip(preds_norm, items)) / n,
        predictions=preds, predictions_norm=preds_norm, n=n, logprobs=logprobs, n_tokens=n_tokens,
    )


# --------------------------------------------------------------------------------------------------------------------
# Generation scorer


def _choice_pattern(choice: str) -> re.Pattern:
    # Word boundaries that also work for choices starting or ending in a symbol ("$50", "5%", "C++"), where \b would
    # not: no word character just before or after. And not glued into a longer number: "5" must not match in "5.5"
    # or "1,000" -- while "The answer is 8." still matches "8".
    return re.compile(r"(?<!\w)(?<!\d[.,])" + re.escape(choice.strip()) + r"(?!\w)(?![.,]\d)", re.IGNORECASE)


def choices_named(reply: str, choices: Sequence[str]) -> set[int]:
    """Indices of the choices a reply names (case-insensitive, whole words).

    A match that lies inside a longer match of another choice does not count: with choices "New York" and "York",
    the reply "New York" names only "New York".
    """
    spans: list[tuple[int, int, int]] = []  # (start, end, choice index)
    for j, c in enumerate(choices):
        if c.strip():
            spans += [(m.start(), m.end(), j) for m in _choice_pattern(c).finditer(reply)]
    named = set()
    for s, e, j in spans:
        inside_longer = any(j2 != j and s2 <= s and e <= e2 and (e2 - s2) > (e - s) for s2, e2, j2 in spans)
        if not inside_longer:
            named.add(j)
    return named


def judge_reply(reply: str, choices: Sequence[str], answer: int) -> bool:
    """A free reply is correct iff it names the right choice and no other one (see :func:`choices_named`)."""
    return choices_named(reply, choices) == {answer}


@dataclass
class GenResult:
    """Generation (behavioural) scores of one multiple-choice set."""

    accuracy: float
    """Share of items whose greedy reply names the right choice and no other."""
    replies: list[str]
    """The model's reply per item (special tokens removed, stripped)."""
    correct: list[bool]
    """Whether each reply was judged correct."""
    n: int
    """Number of items scored."""


@torch.no_grad()
def score_generation(model, tokenizer, items: Sequence["MCItem"], *, max_new_tokens: int = 32, batch_size: int = 16,
                     device=None) -> GenResult:
    """Let the model answer each question greedily (from :func:`mc_prompt`) and judge the reply (:func:`judge_reply`).

    Prompts are batched ``batch_size`` at a time with left padding, so every reply continues right after its prompt.
    """
    _check_items(items)
    if batch_size < 1 or max_new_tokens < 1:
        raise EvaluationError("batch_size and max_new_tokens must be at least 1.")
    dev = _model_device(model, device)
    pad = _pad_id(tokenizer)
    prompts = [_prompt_ids(tokenizer, it.question) for it in items]
    replies = [""] * len(items)

    order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))
    with _eval_mode(model):
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            L = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), L), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), L), dtype=torch.long)
            for r, i in enumerate(idx):  # padded by hand: the caller's tokenizer.padding_side stays untouched
                ids[r, L - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[r, L - len(prompts[i]):] = 1
            # use_cache=True: load_model turns the cache off for training, which would make generation quadratic.
            out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, use_cache=True)
            for r, i in enumerate(idx):
                replies[i] = tokenizer.decode(out[r, L:], skip_special_tokens=True).strip()

    correct = [judge_reply(rep, it.choices, it.answer) for rep, it in zip(replies, items)]
    return GenResult(accuracy=sum(correct) / len(items), replies=replies, correct=correct, n=len(items))


# --------------------------------------------------------------------------------------------------------------------
# Combining


def harmonic_mean(a: float, b: float) -> float:
    """S = 2ab / (a + b); 0 when both are 0."""
    return 0.0 if a + b <= 0 else 2.0 * a * b / (a + b)


def combine(loglik_acc: float | None, gen_acc: float | None, how: str = "mean") -> float:
    """A set's score from its two scorers' accuracies.

    - ``"mean"`` (default): the mean of the log-likelihood accuracy (summed log-probs, ``MCResult.accuracy``) and the
      generation accuracy. Why both: log-likelihood alone missed real forgetting (the model still ranked
      the right choice first while it no longer *said* it), and generation alone depends on answer style (a model
      that answers correctly in other words, or lists options, is judged wrong), so each covers the other's blind
      spot. (Project design note; revisit it if either scorer changes.)
    - ``"loglik"``: log-likelihood accuracy only (cheap, deterministic, style-independent).
    - ``"gen"``: generation accuracy only (what a user sees).
    """
    if how not in SCORERS:
        raise EvaluationError(f"Unknown scorer {how!r}; use one of {', '.join(SCORERS)}.")
    need = {"mean": ("loglik", "gen"), "loglik": ("loglik",), "gen": ("gen",)}[how]
    have = {"loglik": loglik_acc, "gen": gen_acc}
    missing = [k for k in need if have[k] is None]
    if missing:
        raise EvaluationError(f"Scorer {how!r} needs the {' and '.join(missing)} accuracy, which was not computed.")
    if how == "mean":
        return (loglik_acc + gen_acc) / 2.0
    return float(have[how])


@dataclass
class Scores:
    """The evaluation of one model: general, domain, and combined score (each in [0, 1], or None when not measured)."""

    s_g: float | None
    """S_G: score on the general set (knowledge the model should keep)."""
    s_d: float | None
    """S_D: score on the domain set (knowledge the fine-tune should add)."""
    s: float | None
    """S: harmonic mean of S_G and S_D; None unless both were measured."""
    detail: dict = field(default_factory=dict)
    """Per set ("general", "domain"): {"n", "loglik", "loglik_norm", "gen"} (None where that scorer did not run),
    plus "scorer": how each set's score was formed."""


def _score_set(model, tokenizer, items, scorer: str, batch_size: int, max_new_tokens: int
               ) -> tuple[float, dict]:
    ll = gen = None
    if scorer in ("mean", "loglik"):
        ll = score_mc_loglik(model, tokenizer, items, batch_size=batch_size)
    if scorer in ("mean", "gen"):
        gen = score_generation(model, tokenizer, items, max_new_tokens=max_new_tokens, batch_size=batch_size)
    detail = {
        "n": len(items),
        "loglik": ll.accuracy if ll else None,
        "loglik_norm": ll.accuracy_norm if ll else None,
        "gen": gen.accuracy if gen else None,
    }
    return combine(detail["loglik"], detail["gen"], scorer), detail


def evaluate(model, tokenizer, general_items: Iterable["MCItem"] | None, domain_items: Iterable["MCItem"] | None, *,
             scorer: str = "mean", max_items: int | None = None, batch_size: int = 16,
             max_new_tokens: int = 32) -> Scores:
    """S_G on the general items, S_D on the domain items, S their harmonic mean.

    ``scorer`` says how a set's score is formed (see :func:`combine`); only the scorers it needs are run.
    ``max_items`` keeps the first N items of each set (quick evaluation during training). A set that is empty or
    None gets score None, and then S is None.
    """
    if scorer not in SCORERS:
        raise EvaluationError(f"Unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}.")
    if max_items is not None and max_items < 0:
        raise EvaluationError(f"max_items must be at least 0, got {max_items}.")
    detail: dict = {"scorer": scorer}
    result: dict[str, float | None] = {}
    for key, name, items in (("s_g", "general", general_items), ("s_d", "domain", domain_items)):
        items = list(items or [])
        if max_items is not None:
            items = items[:max_items]
        if not items:
            result[key], detail[name] = None, None
            continue
        result[key], detail[name] = _score_set(model, tokenizer, items, scorer, batch_size, max_new_tokens)
    s = None if result["s_g"] is None or result["s_d"] is None else harmonic_mean(result["s_g"], result["s_d"])
    return Scores(s_g=result["s_g"], s_d=result["s_d"], s=s, detail=detail)


def delta(scores: Scores, base: Scores) -> dict:
    """Raw differences ``scores - base`` of s_g, s_d and s (in points of [0, 1]; None where either is None)."""
    def d(a, b):
        return None if a is None or b is None else a - b

    return {k: d(getattr(scores, k), getattr(base, k)) for k in ("s_g", "s_d", "s")}
