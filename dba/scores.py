"""Evaluation: the scores S_G (general knowledge kept), S_D (domain knowledge gained) and S (their harmonic mean),
each with a 95 % confidence interval, plus a continuous score (held-out answer NLL per token).

Each evaluation set is a list of multiple-choice items (``dba.data.MCItem``: ``question``, ``choices``, ``answer``;
only those three attributes and an optional ``id`` are read). Two scorers look at a set:

- **log-likelihood** (:func:`score_mc_loglik`): the model reads the question (as a chat user turn, see
  :func:`mc_prompt`) and we compare the log-probability it gives to each choice as its reply. Two variants are
  reported: the sum of the choice's token log-probs (``accuracy``) and their mean per token (``accuracy_norm``, which
  does not favour short choices). Cheap, deterministic, and sees knowledge the model cannot yet put into words.
- **generation** (:func:`score_generation`): the model answers freely (greedy), and the reply is correct when it names
  the right choice and no other (:func:`judge_reply`). This is what a user sees.

A third, continuous score needs no choices: **held-out answer NLL** (:func:`score_nll`), the mean negative
log-likelihood per answer token of reference answers to held-out questions (:func:`load_qa_pairs`: general and domain
pairs that are in neither the training nor the anchor corpus), averaged over pairs. Lower is better; it moves with
every small change of the model, long before an MC item flips.

What each score is blind to:

- **MC log-likelihood** ranks given choices; it is blind to *behavioural* drift: a model whose greedy answer has
  become nonsense ("The capital of France is the capital of the European Central Bank…") can still rank "Paris"
  above "Rome" (measured: log-lik accuracy 0.50 → 0.53 while generation accuracy fell 0.50 → 0.20). Also blind to
  anything outside the listed choices.
- **Generation** sees what a user sees, but is blind to knowledge the model has yet words differently (style): a
  right answer in other words, a refusal, or a list of all options is judged wrong; it is coarse (an item flips
  only when the greedy path changes) and needs a longer forward per item.
- **Answer NLL** sees small shifts of the whole output distribution, but is blind to *which* answer wins: a model
  can assign the reference answer a lower NLL while its greedy reply is still wrong (or become more confident in a
  wrong answer while the reference's NLL barely moves); it is scale-dependent (token counts, tokenizer), so compare
  it only between models sharing a tokenizer, and it rewards matching the reference's wording, not just its facts.

A set's score is formed from the two MC scorers by :func:`combine` (``"mean"`` by default, see there for why), S_G on
general items, S_D on domain items, and S = 2·S_G·S_D / (S_G + S_D) (:func:`harmonic_mean`), which is high only when
the model learned the domain *and* kept its general knowledge. :func:`evaluate` does all of it and keeps every item's
result, so that intervals can be computed anywhere (``dba.stats``, item-level bootstrap):

- ``Scores.ci`` — 95 % interval of each score (``s_g``, ``s_d``, ``s``, ``nll_g``, ``nll_d``), ``Scores.n_g/n_d``;
- :func:`paired_delta` — a model minus a base (or direct), paired on the same items, also over seeds;
- :func:`seed_intervals` — several seeds' Scores pooled: means with seed x item intervals;
- :func:`scores_from_record` — a Scores back from an evaluation record (metrics.jsonl, base.json).

:func:`delta` gives the raw differences (no intervals).

**Fast scoring.** Every scorer first runs the chat template's shared prefix (the system prompt and whatever all
prompts of the set share) once, keeps its KV cache (``transformers.DynamicCache``), and then per batch of items runs
each item's prompt once (left-padded *after* the shared prefix, explicit position ids), copies each item's cache rows
to its choices (``DynamicCache.batch_select_indices``) and runs only the choice tokens. Generation continues from the
same caches with a batched greedy loop that stops a row at EOS / end-of-turn or at a newline after some answer text,
drops stopped rows from the batch, and stops when all rows have. Models whose cache is not a plain DynamicCache
(sliding-window or linear-attention layers) and fake models take the plain path: every (prompt + choice) sequence in
one right-padded forward, and ``model.generate``. Both paths give the same numbers (tested).
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch

from .errors import DataError, DBAError, EvaluationError

if TYPE_CHECKING:  # dba.data is written alongside this module; only its MCItem's shape is used here
    from .data import MCItem
    from .stats import Interval

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


def _encode_prompt(tokenizer, text: str) -> list[int]:
    # A chat template writes its own BOS/special tokens into the text; adding them again would double the BOS
    # (e.g. Llama 3). A plain prompt gets the tokenizer's usual special tokens, as in pre-training.
    return list(tokenizer(text, add_special_tokens=not _has_chat_template(tokenizer)).input_ids)


def _prompt_ids(tokenizer, question: str) -> list[int]:
    """Token ids of :func:`mc_prompt`."""
    return _encode_prompt(tokenizer, mc_prompt(tokenizer, question))


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


def _forward_params(model) -> set[str]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return set(inspect.signature(base.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _accepts_logits_to_keep(model) -> bool:
    """Whether the causal LM's forward can skip the output head on positions we do not score."""
    return "logits_to_keep" in _forward_params(model)


def _cache_arg(model) -> str | None:
    """The forward's name for the KV cache: ``cache`` (transformers 5.x) or ``past_key_values`` (older); None when
    the fast path cannot use the model (it must also take position ids and an attention mask)."""
    params = _forward_params(model)
    if not {"position_ids", "attention_mask"} <= params or not hasattr(model, "config"):
        return None
    return "cache" if "cache" in params else "past_key_values" if "past_key_values" in params else None


def _out_cache(out):
    c = getattr(out, "cache", None)
    return c if c is not None else getattr(out, "past_key_values", None)


# --------------------------------------------------------------------------------------------------------------------
# The engine: log-probabilities of continuations after prompts


def _common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each prompt at least one token of its own."""
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


class _SharedPrefix:
    """The KV cache of the tokens all prompts of a set share, computed once; :meth:`run_prompts` continues it with a
    batch of prompts' own tokens. ``None`` from :meth:`build` when the model's cache is not a plain DynamicCache."""

    def __init__(self, model, ids: list[int], kv, dev, cache_arg: str):
        self.model, self.ids, self.kv, self.dev, self.cache_arg = model, ids, kv, dev, cache_arg

    @classmethod
    def build(cls, model, prompts: Sequence[Sequence[int]], dev) -> "_SharedPrefix | None":
        cache_arg = _cache_arg(model)
        if cache_arg is None:
            return None
        from transformers.cache_utils import DynamicCache, DynamicLayer

        n = _common_prefix_len(prompts)
        if n < 1:
            return None
        ids = list(prompts[0][:n])
        out = model(input_ids=torch.tensor([ids], device=dev), use_cache=True, **cls._keep(model, 1))
        cache = _out_cache(out)
        if not isinstance(cache, DynamicCache) or not cache.layers \
                or any(type(layer) is not DynamicLayer for layer in cache.layers):
            return None  # sliding-window / linear-attention / KV-sharing layers: the plain path is exact for them
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        return cls(model, ids, kv, dev, cache_arg)

    @staticmethod
    def _keep(model, k: int) -> dict:
        return {"logits_to_keep": k} if _accepts_logits_to_keep(model) else {}

    def cache(self, rows: int):
        from transformers.cache_utils import DynamicCache

        return DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                            for k, v in self.kv])

    def run_prompts(self, prompts: Sequence[Sequence[int]], pad: int):
        """Forward the prompts' own tokens (after the shared prefix), left-padded between prefix and prompt.

        Returns (next-token logits per row (float), the cache, the attention mask so far, the last position ids).
        """
        P = len(self.ids)
        own = [list(p[P:]) for p in prompts]
        B, L = len(own), max(len(o) for o in own)
        ids = torch.full((B, L), pad, dtype=torch.long)
        seg = torch.zeros((B, L), dtype=torch.long)
        for r, o in enumerate(own):
            ids[r, L - len(o):] = torch.tensor(o)
            seg[r, L - len(o):] = 1
        attn = torch.cat([torch.ones((B, P), dtype=torch.long), seg], dim=1)
        pos = (P + seg.cumsum(dim=1) - 1).clamp(min=0)
        cache = self.cache(B)
        out = self.model(input_ids=ids.to(self.dev), attention_mask=attn.to(self.dev), position_ids=pos.to(self.dev),
                         use_cache=True, **{self.cache_arg: cache}, **self._keep(self.model, 1))
        return out.logits[:, -1, :].float(), _out_cache(out), attn, pos[:, -1].clone()


def _token_logprobs(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] along the last axis, without writing a vocabulary-sized log-softmax tensor."""
    return logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _loglik_fast(model, prefix: _SharedPrefix, prompts, conts, order, batch_size: int, pad: int,
                 out: list[list[float]]) -> None:
    dev = prefix.dev
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        last_logits, cache, attn, last_pos = prefix.run_prompts([prompts[i] for i in idx], pad)
        rows = [(b, j) for b, i in enumerate(idx) for j in range(len(conts[i]))]
        seqs = [conts[idx[b]][j] for b, j in rows]
        sel = torch.tensor([b for b, _ in rows], dtype=torch.long)
        first = torch.tensor([s[0] for s in seqs], device=last_logits.device)
        lp_first = _token_logprobs(last_logits[sel.to(last_logits.device)], first)
        sums = lp_first.clone()
        Lc = max(len(s) for s in seqs)
        if Lc > 1:  # the first token of every continuation is predicted by the prompt's last position
            cache.batch_select_indices(sel.to(dev))
            R = len(rows)
            ids = torch.full((R, Lc), pad, dtype=torch.long)
            cmask = torch.zeros((R, Lc), dtype=torch.long)
            target = torch.full((R, Lc - 1), -1, dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                cmask[r, :len(s)] = 1
                if len(s) > 1:
                    target[r, :len(s) - 1] = torch.tensor(s[1:])
            a2 = torch.cat([attn[sel], cmask], dim=1)
            pos = last_pos[sel].unsqueeze(1) + 1 + torch.arange(Lc).unsqueeze(0)
            o = model(input_ids=ids.to(dev), attention_mask=a2.to(dev), position_ids=pos.to(dev),
                      use_cache=True, **{prefix.cache_arg: cache})
            logits = o.logits[:, :Lc - 1, :].float()
            tgt = target.to(logits.device)
            valid = tgt >= 0
            lp = _token_logprobs(logits, tgt.clamp(min=0))
            sums = sums + (lp * valid).sum(dim=1)
        for (b, j), v in zip(rows, sums.tolist()):
            out[idx[b]][j] = v


def _loglik_plain(model, prompts, conts, order, batch_size: int, pad: int, dev, out: list[list[float]]) -> None:
    keep_ok = _accepts_logits_to_keep(model)
    for start in range(0, len(order), batch_size):
        rows = [(i, j) for i in order[start:start + batch_size] for j in range(len(conts[i]))]
        seqs = [list(prompts[i]) + list(conts[i][j]) for i, j in rows]
        L = max(len(s) for s in seqs)
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        # target[r, t] is the token predicted at position t (the one at t+1) when it is a continuation token, else -1.
        target = torch.full((len(rows), L), -1, dtype=torch.long)
        for r, ((i, j), s) in enumerate(zip(rows, seqs)):
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
            p = len(prompts[i])
            target[r, p - 1:len(s) - 1] = torch.tensor(conts[i][j])
        # Only positions from the shortest prompt's last token on predict continuation tokens: with right padding
        # they are the last `keep` positions, so the output head (a vocab-sized matmul) can skip the rest.
        keep = L - (min(len(prompts[i]) for i, _ in rows) - 1)
        kw: dict[str, Any] = {"logits_to_keep": keep} if keep_ok else {}
        o = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), use_cache=False, **kw)
        logits = o.logits[:, -keep:, :].float()
        tgt = target[:, -keep:].to(logits.device)
        valid = tgt >= 0
        lp = _token_logprobs(logits, tgt.clamp(min=0))
        for r, v in enumerate((lp * valid).sum(dim=1).tolist()):
            i, j = rows[r]
            out[i][j] = v


@torch.no_grad()
def continuation_logprobs(model, prompts: Sequence[Sequence[int]], conts: Sequence[Sequence[Sequence[int]]], *,
                          pad_id: int, batch_size: int = 16, device=None, fast: bool = True) -> list[list[float]]:
    """Summed log p(continuation | prompt) for every continuation of every prompt (token ids; each prompt and each
    continuation at least one token). ``batch_size`` prompts (with all their continuations) per forward.

    ``fast``: the shared-prefix KV cache path (see the module notes) where the model allows it, else one
    right-padded forward over every (prompt + continuation). The model is in eval mode meanwhile.
    """
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}.")
    if any(len(p) < 1 for p in prompts) or any(len(c) < 1 for cs in conts for c in cs):
        raise EvaluationError("Every prompt and every continuation needs at least one token.")
    dev = _model_device(model, device)
    out: list[list[float]] = [[0.0] * len(cs) for cs in conts]
    # Items with similar prompt lengths share a batch, so little of each forward is padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    with _eval_mode(model):
        prefix = _SharedPrefix.build(model, prompts, dev) if fast and prompts else None
        if prefix is not None:
            _loglik_fast(model, prefix, prompts, conts, order, batch_size, pad_id, out)
        else:
            _loglik_plain(model, prompts, conts, order, batch_size, pad_id, dev, out)
    return out


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
    correct: list[bool] = field(default_factory=list)
    """Per item: prediction (summed log-prob) == answer."""
    correct_norm: list[bool] = field(default_factory=list)
    """Per item: length-normalised prediction == answer."""


def _argmax(xs: Sequence[float]) -> int:
    return max(range(len(xs)), key=lambda j: (xs[j], -j))  # highest; first one on ties


@torch.no_grad()
def score_mc_loglik(model, tokenizer, items: Sequence["MCItem"], *, batch_size: int = 16,
                    device=None, fast: bool = True) -> MCResult:
    """Score multiple-choice items by the log-probability the model gives each choice as its reply to the question.

    The score of a choice is the sum of log p(token | prompt, earlier choice tokens) over the choice's tokens
    (``tokenizer(choice, add_special_tokens=False)``, appended to the prompt's tokens); see
    :func:`continuation_logprobs` for how (``fast``) and the batching (``batch_size`` items per forward). The result
    equals scoring each (prompt + choice) on its own. The model is in eval mode while scoring and is put back in
    train mode afterwards if it was.
    """
    _check_items(items)
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}.")
    prompts = [_prompt_ids(tokenizer, it.question) for it in items]
    choices = [[_choice_ids(tokenizer, c) for c in it.choices] for it in items]
    logprobs = continuation_logprobs(model, prompts, choices, pad_id=_pad_id(tokenizer), batch_size=batch_size,
                                     device=device, fast=fast)
    n_tokens = [[len(c) for c in cs] for cs in choices]
    preds = [_argmax(lps) for lps in logprobs]
    preds_norm = [_argmax([lp / n for lp, n in zip(lps, ns)]) for lps, ns in zip(logprobs, n_tokens)]
    correct = [p == it.answer for p, it in zip(preds, items)]
    correct_norm = [p == it.answer for p, it in zip(preds_norm, items)]
    n = len(items)
    return MCResult(accuracy=sum(correct) / n, accuracy_norm=sum(correct_norm) / n, predictions=preds,
                    predictions_norm=preds_norm, n=n, logprobs=logprobs, n_tokens=n_tokens, correct=correct,
                    correct_norm=correct_norm)


# --------------------------------------------------------------------------------------------------------------------
# Held-out answer NLL (continuous score)


@dataclass
class QAPair:
    """A held-out question with a reference answer (for :func:`score_nll`)."""

    prompt: list[dict]
    """The chat messages before the answer (usually one user turn)."""
    answer: str
    """The reference answer (the assistant's reply)."""
    id: str | None = None


def load_qa_pairs(path: str | Path) -> list[QAPair]:
    """Question/answer pairs from a file ``dba.data.read_rows`` reads: ``{"question", "answer": text}``,
    instruction/output (+ input), prompt/response or chat (``messages``: the last assistant turn is the answer)."""
    from .data import read_rows, row_messages

    rows = read_rows(path)
    pairs: list[QAPair] = []
    for i, row in enumerate(rows):
        where = f"{path}: row {i + 1}"
        try:
            if isinstance(row, dict) and "question" in row and isinstance(row.get("answer"), str):
                msgs = [{"role": "user", "content": str(row["question"])},
                        {"role": "assistant", "content": row["answer"]}]
            else:
                msgs = row_messages(row)
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        last = max((k for k, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None or not msgs[last]["content"].strip() or last == 0:
            raise DataError(f"{where}: needs a question and a non-empty answer (a text row has none).")
        ident = row.get("id") if isinstance(row, dict) else None
        pairs.append(QAPair(prompt=msgs[:last], answer=msgs[last]["content"],
                            id=None if ident is None else str(ident)))
    if not pairs:
        raise DataError(f"{path} holds no question/answer pairs.")
    return pairs


def heldout_pairs_path(name: str) -> Path:
    """The bundled held-out question/answer pairs of ``"general"`` or a bundled domain (``heldout_pairs.jsonl``
    beside its ``eval.jsonl``: pairs in neither the training nor the anchor corpus)."""
    from .data import bundled_path

    path = bundled_path(name, "eval").with_name("heldout_pairs.jsonl")
    if not path.exists():
        raise DataError(f"The bundled set {name!r} has no held-out pairs ({path} is missing).")
    return path


def _pair_prompt_ids(tokenizer, pair: QAPair) -> list[int]:
    if len(pair.prompt) == 1 and pair.prompt[0]["role"] == "user":
        return _prompt_ids(tokenizer, pair.prompt[0]["content"])  # exactly the MC scorer's prompt
    from .data import render_chat

    return _encode_prompt(tokenizer, render_chat(tokenizer, pair.prompt, add_generation_prompt=True))


@dataclass
class NLLResult:
    """Held-out answer NLL of one set of pairs."""

    nll: float
    """Mean over pairs of each pair's mean NLL per answer token (nats; lower is better)."""
    per_item: list[float]
    """Each pair's mean NLL per answer token."""
    n_tokens: list[int]
    """Answer tokens per pair."""
    n: int
    """Pairs scored."""


@torch.no_grad()
def score_nll(model, tokenizer, pairs: Sequence[QAPair], *, batch_size: int = 16, device=None,
              fast: bool = True) -> NLLResult:
    """Mean negative log-likelihood per answer token of each reference answer given its question, averaged over
    pairs (each pair counts once, whatever its length). The answer is tokenised as an MC choice is
    (:func:`score_mc_loglik`): its text after the generation prompt, no end-of-turn token. One forward per batch."""
    if not pairs:
        raise DataError("The held-out NLL set holds no pairs.")
    prompts = [_pair_prompt_ids(tokenizer, p) for p in pairs]
    answers = [_choice_ids(tokenizer, p.answer) for p in pairs]
    for p, a in zip(pairs, answers):
        if not a:
            raise DataError(f"Pair {p.id or p.answer!r}: the answer has no tokens.")
    lps = continuation_logprobs(model, prompts, [[a] for a in answers], pad_id=_pad_id(tokenizer),
                                batch_size=batch_size, device=device, fast=fast)
    per = [-lp[0] / len(a) for lp, a in zip(lps, answers)]
    return NLLResult(nll=sum(per) / len(per), per_item=per, n_tokens=[len(a) for a in answers], n=len(per))


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


_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>")


def stop_token_ids(model, tokenizer) -> set[int]:
    """Tokens that end a reply: the tokenizer's EOS, the model's generation EOS ids, and the usual end-of-turn
    tokens the vocabulary has."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gc = getattr(model, "generation_config", None)
    eos = getattr(gc, "eos_token_id", None)
    ids.update(int(e) for e in ([eos] if isinstance(eos, int) else (eos or [])))
    for t in _END_OF_TURN:
        i = tokenizer.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and tokenizer.convert_ids_to_tokens(i) == t:
            ids.add(i)
    return ids


def first_answer_line(text: str) -> str:
    """The reply up to the first line break that follows some text (leading blank lines skipped), stripped."""
    text = text.lstrip()
    cut = text.find("\n")
    return (text if cut < 0 else text[:cut]).strip()


def finish_reply(tokenizer, tokens: Sequence[int], stop_ids: set[int]) -> str:
    """The judged reply from generated token ids: up to the first stop token, decoded without special tokens, up
    to the first line break after some answer text (the stop rule of :func:`score_generation`)."""
    toks = list(tokens)
    for k, t in enumerate(toks):
        if t in stop_ids:
            toks = toks[:k]
            break
    return first_answer_line(tokenizer.decode(toks, skip_special_tokens=True))


def _reply_done(tokenizer, tokens: list[int], stop_ids: set[int]) -> bool:
    if tokens[-1] in stop_ids:
        return True
    text = tokenizer.decode(tokens, skip_special_tokens=True).lstrip()
    return "\n" in text


def _generate_fast(model, tokenizer, prefix: _SharedPrefix, prompts, order, batch_size: int, pad: int,
                   max_new_tokens: int, stop_ids: set[int]) -> list[list[int]]:
    dev = prefix.dev
    keep_kw = prefix._keep(model, 1)
    outs: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        logits, cache, attn, pos = prefix.run_prompts([prompts[i] for i in idx], pad)
        active = list(range(len(idx)))
        for step in range(max_new_tokens):
            nxt = logits.argmax(dim=-1).tolist()
            keep = []
            for a, t in enumerate(nxt):
                toks = outs[idx[active[a]]]
                toks.append(t)
                if not _reply_done(tokenizer, toks, stop_ids):
                    keep.append(a)
            if not keep or step == max_new_tokens - 1:
                break
            if len(keep) < len(active):  # drop finished rows: later steps only compute the rest
                k = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(k.to(dev))
                attn, pos = attn[k], pos[k]
                active = [active[a] for a in keep]
                nxt = [nxt[a] for a in keep]
            attn = torch.cat([attn, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
            pos = pos + 1
            o = model(input_ids=torch.tensor(nxt, dtype=torch.long).unsqueeze(1).to(dev),
                      attention_mask=attn.to(dev), position_ids=pos.unsqueeze(1).to(dev),
                      use_cache=True, **{prefix.cache_arg: cache}, **keep_kw)
            logits, cache = o.logits[:, -1, :].float(), _out_cache(o)
    return outs


def _generate_plain(model, prompts, order, batch_size: int, pad: int, max_new_tokens: int, stop_ids: set[int],
                    dev) -> list[list[int]]:
    outs: list[list[int]] = [[] for _ in prompts]
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
                             do_sample=False, pad_token_id=pad, eos_token_id=sorted(stop_ids) or None,
                             use_cache=True)
        for r, i in enumerate(idx):
            outs[i] = out[r, L:].tolist()
    return outs


@dataclass
class GenResult:
    """Generation (behavioural) scores of one multiple-choice set."""

    accuracy: float
    """Share of items whose greedy reply names the right choice and no other."""
    replies: list[str]
    """The model's reply per item (see :func:`finish_reply`)."""
    correct: list[bool]
    """Whether each reply was judged correct."""
    n: int
    """Number of items scored."""


@torch.no_grad()
def score_generation(model, tokenizer, items: Sequence["MCItem"], *, max_new_tokens: int = 32, batch_size: int = 64,
                     device=None, fast: bool = True) -> GenResult:
    """Let the model answer each question greedily (from :func:`mc_prompt`) and judge the reply (:func:`judge_reply`).

    Prompts are batched ``batch_size`` at a time with left padding, so every reply continues right after its prompt.
    Larger batches than for the log-likelihood pay off: a decoding step feeds one token per row, so a small batch
    leaves the matrix products memory-bound (measured on 2 CPU cores: 64 rows took half the time of 16).
    Stop rule: a reply ends at EOS or an end-of-turn token (:func:`stop_token_ids`) or at a line break after some
    answer text (the reply judged is its first line, :func:`finish_reply`), or after ``max_new_tokens``. ``fast``:
    the shared-prefix KV cache and a greedy loop that drops finished rows (see the module notes); otherwise
    ``model.generate``. Both give the same replies.
    """
    _check_items(items)
    if batch_size < 1 or max_new_tokens < 1:
        raise EvaluationError("batch_size and max_new_tokens must be at least 1.")
    dev = _model_device(model, device)
    pad = _pad_id(tokenizer)
    stop_ids = stop_token_ids(model, tokenizer)
    prompts = [_prompt_ids(tokenizer, it.question) for it in items]
    order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))
    with _eval_mode(model):
        prefix = _SharedPrefix.build(model, prompts, dev) if fast else None
        if prefix is not None:
            toks = _generate_fast(model, tokenizer, prefix, prompts, order, batch_size, pad, max_new_tokens, stop_ids)
        else:
            toks = _generate_plain(model, prompts, order, batch_size, pad, max_new_tokens, stop_ids, dev)
    replies = [finish_reply(tokenizer, t, stop_ids) for t in toks]
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

    Per item the same rule gives 0, 0.5 or 1 (``"mean"``) or 0/1, and the set's score is the mean of those: that is
    what the intervals resample.
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


SCORE_KEYS = ("s_g", "s_d", "s", "nll_g", "nll_d")
_SET_OF = {"s_g": "general", "s_d": "domain", "nll_g": "general", "nll_d": "domain"}


@dataclass
class Scores:
    """The evaluation of one model: general, domain, and combined score (each in [0, 1], or None when not measured),
    with 95 % intervals; optionally the held-out answer NLL per token.

    Per-item results live in ``detail`` (JSON-friendly, so an evaluation record in metrics.jsonl keeps them): per set
    ``detail[set]["per_item"]`` = {"id", "score", "loglik", "loglik_norm", "gen"} lists (None where that scorer did
    not run) and ``detail[set]["nll"]`` = {"n", "nll", "ci", "per_item", "n_tokens", "id"} when NLL pairs were given.
    """

    s_g: float | None
    """S_G: score on the general set (knowledge the model should keep)."""
    s_d: float | None
    """S_D: score on the domain set (knowledge the fine-tune should add)."""
    s: float | None
    """S: harmonic mean of S_G and S_D; None unless both were measured."""
    detail: dict = field(default_factory=dict)
    """Per set ("general", "domain"): {"n", "loglik", "loglik_norm", "gen", "ci", "per_item", "nll"} (None where
    that scorer did not run), plus "scorer": how each set's score was formed."""
    ci: dict = field(default_factory=dict)
    """95 % interval ``(lo, hi)`` per score key ("s_g", "s_d", "s", "nll_g", "nll_d"; None where not measured):
    item bootstrap (dba.stats)."""
    n_g: int | None = None
    """Items behind S_G."""
    n_d: int | None = None
    """Items behind S_D."""
    nll_g: float | None = None
    """Held-out general answer NLL per token (lower is better); None when no pairs were given."""
    nll_d: float | None = None
    """Held-out domain answer NLL per token."""

    def per_item(self, key: str) -> list[float] | None:
        """The per-item values whose mean is score ``key`` (s_g, s_d, nll_g, nll_d); None when not kept."""
        if key not in _SET_OF:
            raise EvaluationError(f"No per-item values for {key!r}; use one of {', '.join(_SET_OF)}.")
        d = (self.detail or {}).get(_SET_OF[key])
        if not isinstance(d, dict):
            return None
        src = d.get("nll") if key.startswith("nll") else d
        vals = (src or {}).get("per_item")
        vals = vals.get("score") if isinstance(vals, dict) else vals
        return list(vals) if vals else None

    def item_ids(self, key: str) -> list | None:
        d = (self.detail or {}).get(_SET_OF[key])
        if not isinstance(d, dict):
            return None
        src = d.get("nll") if key.startswith("nll") else (d.get("per_item") or {})
        ids = (src or {}).get("id")
        return list(ids) if ids and all(i is not None for i in ids) else None

    def interval(self, key: str, **kw) -> "Interval | None":
        """The 95 % interval of score ``key`` as a :class:`dba.stats.Interval` (None when not measured or when the
        per-item results were not kept)."""
        from .stats import bootstrap_hm, bootstrap_mean

        if key == "s":
            g, d = self.per_item("s_g"), self.per_item("s_d")
            return None if g is None or d is None else bootstrap_hm(g, d, **kw)
        v = self.per_item(key)
        return None if v is None else bootstrap_mean(v, **kw)

    def delta_vs(self, base: "Scores", **kw) -> dict:
        """:func:`paired_delta` of this model minus ``base``."""
        return paired_delta(self, base, **kw)

    def to_record(self) -> dict:
        """JSON-friendly: {"s_g", "s_d", "s", "nll_g", "nll_d", "ci": {key: [lo, hi] | None}, "n": {"general",
        "domain"}, "detail"} (an evaluation record's fields)."""
        return {"s_g": self.s_g, "s_d": self.s_d, "s": self.s, "nll_g": self.nll_g, "nll_d": self.nll_d,
                "ci": {k: (list(v) if v is not None else None) for k, v in (self.ci or {}).items()},
                "n": {"general": self.n_g, "domain": self.n_d}, "detail": self.detail}


def scores_from_record(rec: dict) -> Scores:
    """A :class:`Scores` from an evaluation record (a metrics.jsonl "eval" line, a base.json entry, or
    :meth:`Scores.to_record`); intervals are recomputed from the per-item results in ``detail`` when the record has
    them, else taken from its "ci" (or None)."""
    detail = rec.get("detail") or {}
    n = rec.get("n") or {}

    def set_n(name):
        d = detail.get(name)
        return n.get(name) if n.get(name) is not None else (d.get("n") if isinstance(d, dict) and d.get("n") else None)

    sc = Scores(s_g=rec.get("s_g"), s_d=rec.get("s_d"), s=rec.get("s"), detail=detail, n_g=set_n("general"),
                n_d=set_n("domain"), nll_g=rec.get("nll_g"), nll_d=rec.get("nll_d"))
    if sc.s is None and sc.s_g is not None and sc.s_d is not None:
        sc.s = harmonic_mean(sc.s_g, sc.s_d)
    saved = rec.get("ci") or {}
    ci = {}
    for k in SCORE_KEYS:
        iv = sc.interval(k) if getattr(sc, k) is not None else None
        ci[k] = iv.as_tuple() if iv is not None else (tuple(saved[k]) if saved.get(k) else None)
    sc.ci = ci
    return sc


def _aligned(runs: Sequence[Scores], key: str, ref_ids: list | None, n_ref: int, what: str):
    """Per-item values of ``key`` for each run, in the order of ``ref_ids`` (by item id where the run has ids, else
    by position, checking the count). None when any run lacks them."""
    rows = []
    for r in runs:
        v = r.per_item(key)
        if v is None:
            return None
        ids = r.item_ids(key)
        if ref_ids is not None and ids is not None:
            if len(set(map(str, ids))) != len(ids) or sorted(map(str, ids)) != sorted(map(str, ref_ids)):
                raise EvaluationError(f"{what}: the runs were scored on different {_SET_OF[key]} items; a paired "
                                      "difference or a pooled interval needs the same items.")
            pos = {str(i): k for k, i in enumerate(ids)}
            v = [v[pos[str(i)]] for i in ref_ids]
        elif len(v) != n_ref:
            raise EvaluationError(f"{what}: {len(v)} vs {n_ref} {_SET_OF[key]} items; a paired difference or a "
                                  "pooled interval needs the same items.")
        rows.append(v)
    return rows


def _as_runs(x) -> list[Scores]:
    runs = list(x) if isinstance(x, (list, tuple)) else [x]
    if not runs:
        raise EvaluationError("No scores given.")
    return [scores_from_record(r) if isinstance(r, dict) else r for r in runs]


def _ref(runs: Sequence[Scores], key: str) -> tuple[list | None, int] | None:
    """(item ids or None, item count) of the first run's ``key``; None when it has no per-item values."""
    v = runs[0].per_item(key)
    return None if v is None else (runs[0].item_ids(key), len(v))


def seed_intervals(runs, **kw) -> dict:
    """Several runs (seeds) of one setting, each a :class:`Scores` or an evaluation record, pooled: per key
    ("s_g", "s_d", "s", "nll_g", "nll_d") a :class:`dba.stats.Interval` whose estimate is the mean over seeds × items
    and whose interval is the two-level (seed x item) bootstrap; None where not measured. One run: item bootstrap."""
    from .stats import bootstrap_hm, bootstrap_mean

    runs = _as_runs(runs)
    out: dict = {}
    vals = {}
    for k in ("s_g", "s_d", "nll_g", "nll_d"):
        ref = _ref(runs, k)
        vals[k] = None if ref is None else _aligned(runs, k, *ref, "seed_intervals")
        out[k] = None if vals[k] is None else bootstrap_mean(vals[k], **kw)
    out["s"] = None if vals["s_g"] is None or vals["s_d"] is None else bootstrap_hm(vals["s_g"], vals["s_d"], **kw)
    return out


def paired_delta(scores, base, **kw) -> dict:
    """``scores - base`` per key ("s_g", "s_d", "s", "nll_g", "nll_d") as a :class:`dba.stats.Interval` (estimate =
    the difference of the scores; interval = paired item bootstrap; None where either side lacks the score or its
    per-item results). Items are matched by id (else by position). Either side may be a list of runs (seeds): seed k
    is paired with seed k, and a single base run is the same for every seed (seed x item bootstrap).
    ``interval.within_noise`` says whether the difference's interval contains 0. Different items: EvaluationError."""
    from .stats import bootstrap_diff, bootstrap_hm_diff

    a_runs, b_runs = _as_runs(scores), _as_runs(base)
    out: dict = {}
    vals = {}
    for k in ("s_g", "s_d", "nll_g", "nll_d"):
        ref = _ref(b_runs, k)
        a = None if ref is None else _aligned(a_runs, k, *ref, "paired_delta")
        b = None if ref is None or a is None else _aligned(b_runs, k, *ref, "paired_delta")
        vals[k] = (a, b)
        out[k] = None if a is None or b is None else bootstrap_diff(a, b, **kw)
    (ga, gb), (da, db) = vals["s_g"], vals["s_d"]
    out["s"] = None if any(x is None for x in (ga, gb, da, db)) else bootstrap_hm_diff(ga, da, gb, db, **kw)
    return out


def _ci(values, **kw):
    from .stats import bootstrap_mean

    iv = bootstrap_mean(values, **kw)
    return [iv.lo, iv.hi]


def _score_set(model, tokenizer, items, scorer: str, batch_size: int, max_new_tokens: int, fast: bool = True,
               gen_batch_size: int | None = None) -> tuple[float, dict]:
    ll = gen = None
    if scorer in ("mean", "loglik"):
        ll = score_mc_loglik(model, tokenizer, items, batch_size=batch_size, fast=fast)
    if scorer in ("mean", "gen"):
        gen = score_generation(model, tokenizer, items, max_new_tokens=max_new_tokens,
                               batch_size=gen_batch_size or 4 * batch_size, fast=fast)
    ll_i = [float(c) for c in ll.correct] if ll else None
    gen_i = [float(c) for c in gen.correct] if gen else None
    if scorer == "mean":
        per = [(a + b) / 2.0 for a, b in zip(ll_i, gen_i)]
    else:
        per = ll_i if scorer == "loglik" else gen_i
    ids = [getattr(it, "id", None) for it in items]
    detail = {
        "n": len(items),
        "loglik": ll.accuracy if ll else None,
        "loglik_norm": ll.accuracy_norm if ll else None,
        "gen": gen.accuracy if gen else None,
        "ci": {"score": _ci(per), "loglik": _ci(ll_i) if ll else None, "gen": _ci(gen_i) if gen else None},
        "per_item": {"id": ids if all(i is not None for i in ids) else None, "score": per, "loglik": ll_i,
                     "loglik_norm": [float(c) for c in ll.correct_norm] if ll else None, "gen": gen_i},
    }
    return combine(detail["loglik"], detail["gen"], scorer), detail


def _nll_set(model, tokenizer, pairs, batch_size: int, fast: bool) -> dict:
    r = score_nll(model, tokenizer, pairs, batch_size=batch_size, fast=fast)
    ids = [p.id for p in pairs]
    return {"n": r.n, "nll": r.nll, "ci": _ci(r.per_item), "per_item": r.per_item, "n_tokens": r.n_tokens,
            "id": ids if all(i is not None for i in ids) else None}


def _pairs(x) -> list[QAPair]:
    if x is None:
        return []
    if isinstance(x, (str, Path)):
        return load_qa_pairs(x)
    return list(x)


def evaluate(model, tokenizer, general_items: Iterable["MCItem"] | None, domain_items: Iterable["MCItem"] | None, *,
             scorer: str = "mean", max_items: int | None = None, batch_size: int = 16,
             max_new_tokens: int = 32, general_nll=None, domain_nll=None, fast: bool = True,
             gen_batch_size: int | None = None) -> Scores:
    """S_G on the general items, S_D on the domain items, S their harmonic mean, each with its 95 % interval.

    ``scorer`` says how a set's score is formed (see :func:`combine`); only the scorers it needs are run.
    ``max_items`` keeps the first N items of each set (quick evaluation during training); None or 0 = all items.
    ``general_nll`` / ``domain_nll``: held-out question/answer pairs (a file path for :func:`load_qa_pairs`, or a
    list of :class:`QAPair`) for the answer NLL per token (``max_items`` applies to them too). A set that is empty
    or None gets score None, and then S is None; a request that scores nothing at all is refused
    (:class:`EvaluationError`). ``batch_size``: items per forward of the log-likelihood and NLL scorers;
    ``gen_batch_size``: rows of the batched greedy generation (default 4 × ``batch_size``, see
    :func:`score_generation`).
    """
    if scorer not in SCORERS:
        raise EvaluationError(f"Unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}.")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0):
        raise EvaluationError(f"max_items must be a whole number, 0 (or None) for all items; got {max_items!r}.")
    sets = {}
    for name, items, pairs in (("general", general_items, general_nll), ("domain", domain_items, domain_nll)):
        items, pairs = list(items or []), _pairs(pairs)
        if max_items:
            items, pairs = items[:max_items], pairs[:max_items]
        sets[name] = (items, pairs)
    if not any(i or p for i, p in sets.values()):
        raise EvaluationError("Nothing to score: the general and domain evaluation sets are both empty or not given "
                              "(check the eval files, and that at least one set is selected).")
    detail: dict = {"scorer": scorer}
    result: dict[str, Any] = {}
    for key, name in (("g", "general"), ("d", "domain")):
        items, pairs = sets[name]
        score = nll = None
        d = None
        if items:
            score, d = _score_set(model, tokenizer, items, scorer, batch_size, max_new_tokens, fast, gen_batch_size)
        if pairs:
            d = d or {"n": 0, "loglik": None, "loglik_norm": None, "gen": None, "ci": None, "per_item": None}
            d["nll"] = _nll_set(model, tokenizer, pairs, batch_size, fast)
            nll = d["nll"]["nll"]
        result["s_" + key], result["nll_" + key], result["n_" + key], detail[name] = score, nll, len(items) or None, d
    s = None if result["s_g"] is None or result["s_d"] is None else harmonic_mean(result["s_g"], result["s_d"])
    sc = Scores(s_g=result["s_g"], s_d=result["s_d"], s=s, detail=detail, n_g=result["n_g"], n_d=result["n_d"],
                nll_g=result["nll_g"], nll_d=result["nll_d"])
    ci = {}
    for k in SCORE_KEYS:
        iv = sc.interval(k) if getattr(sc, k) is not None else None
        ci[k] = iv.as_tuple() if iv is not None else None
    sc.ci = ci
    return sc


def delta(scores: Scores, base: Scores) -> dict:
    """Raw differences ``scores - base`` of s_g, s_d and s (in points of [0, 1]; None where either is None).
    With intervals: :func:`paired_delta`."""
    def d(a, b):
        return None if a is None or b is None else a - b

    return {k: d(getattr(scores, k), getattr(base, k)) for k in ("s_g", "s_d", "s")}
