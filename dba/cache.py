"""Computed-once results, cached on disk: the global gradient ĝ_G of a (model, general corpus, anchor settings) triple
and the base model's scores on a set of evaluation items.

A repeated lesson, a second student on the same server or a notebook re-run skips the anchor pass and the base
evaluation. Nothing stale is ever used:

- **the key** of a cached result holds everything it depends on: the model's weight fingerprint
  (:func:`dba.models.weight_fingerprint`), the corpus content hash (the anchor) or the evaluation items' content hash
  (the scores), the settings (:class:`dba.config.AnchorConfig` as a dict; the scorer settings), the trainable layout
  (LoRA settings or full fine-tuning), the device type and weight dtype, and the library version;
- **the file name** is a digest of that key, so a changed corpus, changed weights or changed settings look for
  another file (a miss, then computed and stored);
- **the file's own metadata** (the safetensors header of an anchor; the JSON of scores) repeats the key, and a file
  whose stored key differs from the one asked for is never used: it is recomputed and replaced. An anchor is also
  checked against the model (:meth:`dba.global_gradient.GlobalGradient.check_compatible`).

Files are written atomically (temp + rename), so a killed process leaves either the old file or the new one. Every
call says whether it used the cache (:class:`CacheUse`), so a page can tell the class.

The cache folder: ``$DBA_RESULT_CACHE``, else ``<dba.models.cache_dir()>/results`` (``~/.cache/dba-studio/results``);
every function also takes ``cache_dir``. Deleting the folder is always safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__
from .config import AnchorConfig
from .io import atomic_write_json

CACHE_FORMAT = 1
"""Bumped when the layout of a cached file changes (old files then miss)."""

ENV_VAR = "DBA_RESULT_CACHE"


@dataclass
class CacheUse:
    """Whether a result came from the cache, for logs and the page."""

    what: str
    """"global gradient" or "base scores"."""
    hit: bool
    """True when the stored result was used (nothing was computed)."""
    file: str | None
    """The cached file (read or written); None when caching is off. (Not called ``path``: an API answer holding a
    dict with a ``path`` key is taken for a file to download by gradio_client.)"""
    reason: str
    """Why: "found", "no cached result for this key", "stored key differs: ...", "unreadable: ...", "caching off"."""
    seconds: float = 0.0
    """Time this call took (reading the file, or computing and storing)."""
    computed_seconds: float | None = None
    """How long computing the result took when it was made (on a hit: the time the cache saved)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line: ``"global gradient: from the cache (saved 41 s)"`` or ``"... computed in 41 s (...)"``."""
        if self.hit:
            saved = f" (saved {self.computed_seconds:.0f} s)" if self.computed_seconds else ""
            return f"{self.what}: from the cache{saved}"
        return f"{self.what}: computed in {self.seconds:.0f} s ({self.reason})"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """Where cached results live: ``cache_dir``, ``$DBA_RESULT_CACHE``, or ``<dba.models.cache_dir()>/results``."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    from .models import cache_dir as model_cache_dir

    return model_cache_dir() / "results"


def _plain(x):
    if is_dataclass(x) and not isinstance(x, type):
        return {k: _plain(v) for k, v in asdict(x).items()}
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def digest(key: dict) -> str:
    """A stable 24-hex-digit digest of a key (JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(_plain(key), sort_keys=True, default=str).encode()).hexdigest()[:24]


def _differences(stored: dict, wanted: dict) -> str:
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    return ", ".join(keys) or "?"


def layout(lm) -> dict:
    """What the model trains (it decides the anchor's space and tensors: LoRA settings, or full fine-tuning) and how
    it computes (device type and weight dtype: a bf16 GPU load and an fp32 CPU load share a weight fingerprint, not
    their numbers)."""
    lora = getattr(lm, "lora", None)
    try:
        dtype = str(next(p for p in lm.model.parameters() if p.is_floating_point()).dtype)
    except StopIteration:
        dtype = None
    device = getattr(getattr(lm, "device", None), "type", None)
    return {"lora": _plain(lora) if lora is not None else None, "quantization": getattr(lm, "quantization", "none"),
            "device": device, "dtype": dtype}


# --------------------------------------------------------------------------------------------------------------------
# The global gradient


def anchor_key(lm, cfg: AnchorConfig, corpus_hash: str) -> dict:
    """The key of ĝ_G for the loaded model ``lm`` (a :class:`dba.models.LoadedModel`), the anchor settings and the
    general corpus (its content hash)."""
    from .models import weight_fingerprint

    return {"kind": "anchor", "format": CACHE_FORMAT, "library": __version__,
            "weight_fingerprint": weight_fingerprint(lm.model), "corpus_hash": corpus_hash,
            "anchor": cfg.to_dict(), "layout": layout(lm)}


def cached_anchor(lm, cfg: AnchorConfig, *, corpus=None, cache_dir: str | Path | None = None, enabled: bool = True,
                  progress: bool = False, callback: Callable[[int, int | None, float], None] | None = None):
    """ĝ_G of ``lm`` on ``cfg``'s general corpus: from the cache when a file with the same key exists, else
    estimated with :func:`dba.anchor.estimate_from_corpus` and stored. Returns ``(GlobalGradient, CacheUse)``.

    ``corpus``: the tokenised corpus when already loaded. ``callback(done, total, seconds)`` after each batch of an
    estimation (raise in it to cancel). ``enabled=False``: always estimate, store nothing."""
    from .anchor import estimate_from_corpus, load_anchor_corpus
    from .errors import AnchorMismatchError, DBAError
    from .global_gradient import GlobalGradient

    t0 = time.perf_counter()
    corpus = corpus if corpus is not None else load_anchor_corpus(cfg, lm.tokenizer)
    key = anchor_key(lm, cfg, corpus.content_hash)
    path = cache_root(cache_dir) / f"anchor-{digest(key)}.safetensors" if enabled else None
    reason = "caching off" if not enabled else "no cached result for this key"
    if path is not None and path.exists():
        try:
            meta = GlobalGradient.read_metadata(path)
            stored = meta.get("cache_key")
            if stored != _plain(key):
                reason = f"stored key differs ({_differences(stored or {}, _plain(key))})"
            else:
                g = GlobalGradient.load(path, lm.model)  # checks the layout and the weights once more
                return g, CacheUse("global gradient", True, str(path), "found", time.perf_counter() - t0,
                                   meta.get("seconds"))
        except AnchorMismatchError as e:
            reason = f"stored anchor does not fit the model ({e})"
        except (DBAError, OSError, ValueError, KeyError) as e:
            reason = f"unreadable ({type(e).__name__}: {e})"
    g = estimate_from_corpus(lm, cfg, corpus=corpus, progress=progress, callback=callback)
    if path is not None:
        g.meta["cache_key"] = _plain(key)
        g.save(path)  # atomic
    return g, CacheUse("global gradient", False, str(path) if path else None, reason, time.perf_counter() - t0,
                       g.meta.get("seconds"))


# --------------------------------------------------------------------------------------------------------------------
# Scores (and anything else JSON-able computed from a base model and a set of items)


def items_hash(items: Iterable[Any]) -> str:
    """Content hash of evaluation items (question, choices, answer, id of each, in order): what is scored, however
    the file that held them was named."""
    rows = [{"q": getattr(it, "question", None), "c": list(getattr(it, "choices", None) or []),
             "a": getattr(it, "answer", None), "id": getattr(it, "id", None)} for it in items or []]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def scores_key(lm, general_items, domain_items, **settings) -> dict:
    """The key of the base model's scores on these items with these scorer settings (``scorer``, ``max_items``,
    anything else that changes the numbers)."""
    from .models import weight_fingerprint

    return {"kind": "scores", "format": CACHE_FORMAT, "library": __version__,
            "weight_fingerprint": weight_fingerprint(lm.model), "compute": layout(lm),
            "general_items": items_hash(general_items),
            "domain_items": items_hash(domain_items), "settings": _plain(settings)}


def cached_json(name: str, key: dict, compute: Callable[[], Any], *, what: str = "base scores",
                cache_dir: str | Path | None = None, enabled: bool = True) -> tuple[Any, CacheUse]:
    """A JSON-able result: read from ``<cache>/<name>-<digest(key)>.json`` when its stored key equals ``key``,
    else ``compute()`` and store it (atomically). Returns ``(value, CacheUse)``."""
    t0 = time.perf_counter()
    path = cache_root(cache_dir) / f"{name}-{digest(key)}.json" if enabled else None
    reason = "caching off" if not enabled else "no cached result for this key"
    if path is not None and path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if stored.get("key") != _plain(key):
                reason = f"stored key differs ({_differences(stored.get('key') or {}, _plain(key))})"
            else:
                return stored["value"], CacheUse(what, True, str(path), "found", time.perf_counter() - t0,
                                                 stored.get("seconds"))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            reason = f"unreadable ({type(e).__name__}: {e})"
    value = compute()
    seconds = time.perf_counter() - t0
    if path is not None:
        atomic_write_json(path, {"key": _plain(key), "seconds": round(seconds, 3),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "value": value})
    return value, CacheUse(what, False, str(path) if path else None, reason, seconds, round(seconds, 3))


def cached_base_scores(lm, general_items, domain_items, *, scorer: str = "mean", max_items: int | None = None,
                       max_new_tokens: int = 32, cache_dir: str | Path | None = None, enabled: bool = True):
    """The base model's :class:`dba.scores.Scores` (with per-item results, so intervals and paired differences work)
    on these items: cached by weight fingerprint, item hashes and scorer settings. Returns ``(Scores, CacheUse)``."""
    from .scores import evaluate, scores_from_record

    general_items, domain_items = list(general_items or []), list(domain_items or [])
    key = scores_key(lm, general_items, domain_items, scorer=scorer, max_items=max_items or None,
                     max_new_tokens=max_new_tokens)

    def compute():
        return evaluate(lm.model, lm.tokenizer, general_items, domain_items, scorer=scorer, max_items=max_items,
                        max_new_tokens=max_new_tokens).to_record()

    rec, use = cached_json("scores", key, compute, cache_dir=cache_dir, enabled=enabled)
    return scores_from_record(rec), use
