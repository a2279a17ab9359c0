"""Corpus -> batches -> global gradient ĝ_G: the ONE anchor pipeline that ``dba anchor``, a ``dba`` run without a
saved anchor, ``dba compare`` and the app's Global-gradient tab all use.

Seed rule (one, documented): the general batches are drawn by :func:`dba.data.batch_plan` with seed
``cfg.seed + ANCHOR_SEED_OFFSET`` (7919), so that with the same run seed they are a different sample from a mixture
run's general batches (seed + 1) and from the domain batches (seed).
"""
from __future__ import annotations

from typing import Callable

from .config import ANCHOR_SEED_OFFSET, AnchorConfig
from .data import Corpus, batch_plan, collate, load_corpus, resolve_corpus
from .global_gradient import GlobalGradient, estimate_global_gradient


def anchor_plan(n_examples: int, cfg: AnchorConfig) -> list[list[int]]:
    """Example indices of each anchor batch (the seed rule above)."""
    return batch_plan(n_examples, cfg.batch_size, cfg.batches, cfg.seed + ANCHOR_SEED_OFFSET)


def load_anchor_corpus(cfg: AnchorConfig, tokenizer) -> Corpus:
    """The general corpus of ``cfg`` (a bundled name or a file/folder), tokenised."""
    return load_corpus(resolve_corpus(cfg.corpus, "train"), tokenizer, cfg.max_length)


def estimate_from_corpus(lm, cfg: AnchorConfig, *, corpus: Corpus | None = None, progress: bool = True,
                         callback: Callable[[int, int | None, float], None] | None = None) -> GlobalGradient:
    """ĝ_G of the loaded model ``lm`` (a :class:`dba.models.LoadedModel`) on ``cfg.batches`` batches of the general
    corpus (``corpus`` when already loaded). ``callback(done, total, seconds)`` after each batch (raise to cancel).
    A fixed ``cfg.rank`` takes precedence over ``cfg.energy``."""
    corpus = corpus if corpus is not None else load_anchor_corpus(cfg, lm.tokenizer)
    plan = anchor_plan(len(corpus), cfg)
    batches = (collate([corpus.examples[i] for i in idx], lm.tokenizer.pad_token_id) for idx in plan)
    return estimate_global_gradient(
        lm.model, batches, space=cfg.space, estimator=cfg.estimator, rank=cfg.rank,
        energy=None if cfg.rank else cfg.energy, energy_scope=cfg.energy_scope, max_batches=cfg.batches,
        progress=progress, callback=callback, base_model_id=lm.name, corpus_name=corpus.name,
        corpus_hash=corpus.content_hash)
