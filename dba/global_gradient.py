"""Stage 1 of DBA: the global gradient ĝ_G, estimated once on a general corpus by zero-learning-rate training.

"Zero-learning-rate training" means: forward + backward over general batches with the weights never changing, keeping
the mean gradient ĝ_G = (1/s)·Σ_i g_i (the paper reads it off Adam's first moment with lr = 0; the exact running mean
is the same quantity without an optimiser, and the EMA form is offered for fidelity experiments).

Two spaces (DESIGN.md §2.1):

- ``param``  — ĝ_G of the trainable parameters themselves (full fine-tuning).
- ``weight`` — Ĝ_l = mean dL/dW_l of every LoRA-adapted base linear l, captured with hooks (dL/dW = Σ_tokens δ·xᵀ)
  without making the (4-bit) base weights trainable. The optimiser maps it to the adapter by the chain rule at the
  current adapter values (see :mod:`dba.optim`), so one anchor serves any LoRA rank.

Each matrix is stored as a truncated SVD (U·S, V) — fixed rank, or the smallest rank that keeps a share of the
Frobenius energy; vectors stay dense. Products with Ĝ are computed in factored form and never rebuild Ĝ.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import __version__
from .errors import AnchorMismatchError, DBAError
from .models import base_model, weight_fingerprint

Space = Literal["param", "weight"]
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------------------------
# Which layers carry an anchor


def _clean_name(name: str) -> str:
    """Module/parameter names without PEFT's wrapper prefixes, so anchors match across wrappings."""
    # "module." (DDP / Accelerate) wraps the PEFT model, so it is stripped first.
    for prefix in ("module.", "base_model.model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace(".base_layer", "")


def lora_layers(model) -> dict[str, torch.nn.Module]:
    """Every LoRA-wrapped linear of a PEFT model, by clean module name (``model.layers.0.self_attn.q_proj``)."""
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer") and len(getattr(module, "lora_A", {})) > 0:
            out[_clean_name(name)] = module
    return out


def _out_in(layer) -> tuple[int, int]:
    base = layer.base_layer
    return int(base.out_features), int(base.in_features)


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Trainable parameters by clean name, in model order (de-duplicating tied weights)."""
    out, seen = {}, set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[_clean_name(name)] = p
    return out


# --------------------------------------------------------------------------------------------------------------------
# The stored anchor


@dataclass
class GlobalGradient:
    """The global gradient ĝ_G: matrices as truncated SVD factors (Ĝ ≈ US·Vᵀ), vectors dense, plus provenance."""

    space: Space
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """name -> (US [m, k], V [n, k]) with Ĝ ≈ US @ V.T (k = kept rank)."""
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> tensor, for vectors and for matrices kept uncompressed."""
    spectra: dict[str, torch.Tensor] = field(default_factory=dict)
    """name -> all singular values of the dense estimate (for plots and for choosing a rank)."""
    energy_kept: dict[str, float] = field(default_factory=dict)
    """name -> share of the Frobenius energy ‖Ĝ‖² kept by the stored rank."""
    meta: dict = field(default_factory=dict)
    """Provenance: base model id, weight fingerprint, targets, rank/energy, corpus, batches, tokens, estimator, ..."""
    fisher_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    """The diagonal Fisher F = mean_i g_i⊙g_i (g_i the per-batch general gradient, from the same pass as ĝ) of each
    matrix, Adafactor-factored: name -> (row sums r [m], column sums c [n]); F̂ = r·cᵀ/Σr. Empty for anchors made
    before the Fisher was stored (EWC then refuses)."""
    fisher_dense: dict[str, torch.Tensor] = field(default_factory=dict)
    """The diagonal Fisher of vectors (param space), dense."""

    # ---- algebra in factored form ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self.factors) + [n for n in self.dense if n not in self.factors]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self.factors:
            us, v = self.factors[name]
            return (us.shape[0], v.shape[0])
        return tuple(self.dense[name].shape)

    def matrix(self, name: str) -> torch.Tensor:
        """The (rank-k) dense matrix; for tests, plots and param-space anchors only — the optimiser never calls it
        in weight space."""
        if name in self.factors:
            us, v = self.factors[name]
            return us @ v.T
        return self.dense[name]

    def times_right(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Ĝ @ x computed as US @ (Vᵀ @ x)."""
        if name in self.factors:
            us, v = self.factors[name]
            return us @ (v.T @ x)
        return self.dense[name] @ x

    def times_left(self, name: str, y: torch.Tensor) -> torch.Tensor:
        """y @ Ĝ computed as (y @ US) @ Vᵀ."""
        if name in self.factors:
            us, v = self.factors[name]
            return (y @ us) @ v.T
        return y @ self.dense[name]

    def to(self, device) -> "GlobalGradient":
        self.factors = {k: (a.to(device), b.to(device)) for k, (a, b) in self.factors.items()}
        self.dense = {k: v.to(device) for k, v in self.dense.items()}
        self.fisher_factors = {k: (a.to(device), b.to(device)) for k, (a, b) in self.fisher_factors.items()}
        self.fisher_dense = {k: v.to(device) for k, v in self.fisher_dense.items()}
        return self

    # ---- the diagonal Fisher (EWC) ----------------------------------------------------------------------------------
    def has_fisher(self) -> bool:
        return bool(self.fisher_factors or self.fisher_dense)

    def fisher(self, name: str) -> torch.Tensor:
        """The (factored) Fisher diagonal of one tensor, as a dense tensor: r·cᵀ/Σr for matrices (tests, plots)."""
        if name in self.fisher_factors:
            r, c = self.fisher_factors[name]
            return torch.outer(r, c) / r.sum().clamp_min(1e-30)
        return self.fisher_dense[name]

    def fisher_mean(self) -> float:
        """The mean of F̂ over all its entries (a factored matrix sums to Σr)."""
        total = sum(float(r.double().sum()) for r, _ in self.fisher_factors.values()) + sum(
            float(t.double().sum()) for t in self.fisher_dense.values())
        count = sum(r.numel() * c.numel() for r, c in self.fisher_factors.values()) + sum(
            t.numel() for t in self.fisher_dense.values())
        return total / count if count else 0.0

    def fisher_numel(self) -> int:
        return sum(r.numel() + c.numel() for r, c in self.fisher_factors.values()) + sum(
            t.numel() for t in self.fisher_dense.values())

    # ---- sizes ------------------------------------------------------------------------------------------------------
    def dense_numel(self) -> int:
        return sum(math.prod(self.shape(n)) for n in self.names())

    def stored_numel(self) -> int:
        return sum(a.numel() + b.numel() for a, b in self.factors.values()) + sum(
            t.numel() for n, t in self.dense.items() if n not in self.factors)

    def summary(self) -> dict:
        energies = list(self.energy_kept.values())
        ranks = [a.shape[1] for a, _ in self.factors.values()]
        return {
            "space": self.space,
            "tensors": len(self.names()),
            "matrices": len(self.factors),
            "rank_min": min(ranks) if ranks else None,
            "rank_max": max(ranks) if ranks else None,
            "rank_mean": sum(ranks) / len(ranks) if ranks else None,
            "energy_kept_min": min(energies) if energies else None,
            "energy_kept_mean": sum(energies) / len(energies) if energies else None,
            "dense_mb": self.dense_numel() * 4 / 2**20,
            "stored_mb": self.stored_numel() * 4 / 2**20,
            "stored_share": self.stored_numel() / max(self.dense_numel(), 1),
            "fisher_mb": self.fisher_numel() * 4 / 2**20 if self.has_fisher() else None,
            "batches": self.meta.get("batches"),
            "tokens": self.meta.get("tokens"),
            "seconds": self.meta.get("seconds"),
        }

    # ---- files ------------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one safetensors file (tensors + JSON metadata in its header), atomically."""
        path = Path(path)
        self.meta["path"] = str(path)
        tensors = {}
        for n, (us, v) in self.factors.items():
            tensors[f"us::{n}"] = us.detach().float().cpu().contiguous()
            tensors[f"v::{n}"] = v.detach().float().cpu().contiguous()
        for n, t in self.dense.items():
            tensors[f"dense::{n}"] = t.detach().float().cpu().contiguous()
        for n, s in self.spectra.items():
            tensors[f"spectrum::{n}"] = s.detach().float().cpu().contiguous()
        for n, (r, c) in self.fisher_factors.items():
            tensors[f"fisher_row::{n}"] = r.detach().float().cpu().contiguous()
            tensors[f"fisher_col::{n}"] = c.detach().float().cpu().contiguous()
        for n, t in self.fisher_dense.items():
            tensors[f"fisher::{n}"] = t.detach().float().cpu().contiguous()
        meta = dict(self.meta, space=self.space, energy_kept=self.energy_kept, format_version=FORMAT_VERSION)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata={"dba": json.dumps(meta)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @staticmethod
    def read_metadata(path: str | Path) -> dict:
        path = Path(path)
        if not path.exists():
            raise DBAError(f"Anchor file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("dba")
        except Exception as e:  # not a safetensors file at all
            raise DBAError(f"{path} is not a DBA anchor file (safetensors): {e}") from e
        if raw is None:
            raise DBAError(f"{path} is a safetensors file but not a DBA anchor (no 'dba' metadata).")
        return json.loads(raw)

    @classmethod
    def load(cls, path: str | Path, model=None, device="cpu") -> "GlobalGradient":
        """Read an anchor; with ``model``, check it belongs to that model and adapter layout (else
        :class:`AnchorMismatchError` naming what differs)."""
        meta = cls.read_metadata(path)
        meta["path"] = str(path)
        g = cls(space=meta["space"], meta=meta, energy_kept=dict(meta.get("energy_kept", {})))
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():
                kind, name = key.split("::", 1)
                if kind == "us":
                    g.factors[name] = (f.get_tensor(key), f.get_tensor(f"v::{name}"))
                elif kind == "dense":
                    g.dense[name] = f.get_tensor(key)
                elif kind == "spectrum":
                    g.spectra[name] = f.get_tensor(key)
                elif kind == "fisher_row":
                    g.fisher_factors[name] = (f.get_tensor(key), f.get_tensor(f"fisher_col::{name}"))
                elif kind == "fisher":
                    g.fisher_dense[name] = f.get_tensor(key)
        if model is not None:
            g.check_compatible(model)
        return g

    def check_compatible(self, model, weights: bool = True) -> None:
        """Raise :class:`AnchorMismatchError` if this anchor was not made for ``model``'s base weights (when
        ``weights``; a model part-way through full fine-tuning has moved, so resumed runs check the layout only)
        and layout."""
        problems = []
        fp = weight_fingerprint(model) if weights else None
        if weights and self.meta.get("weight_fingerprint") and self.meta["weight_fingerprint"] != fp:
            problems.append(f"base weights differ (anchor fingerprint {self.meta['weight_fingerprint']} from "
                            f"{self.meta.get('base_model')!r}, this model {fp})")
        want = _anchor_targets(model, self.space)
        have = {n: tuple(self.shape(n)) for n in self.names()}
        missing = [n for n in want if n not in have]
        wrong = [f"{n} {have[n]} vs {want[n]}" for n in want if n in have and tuple(have[n]) != tuple(want[n])]
        if missing:
            problems.append(f"{len(missing)} {'adapted layers' if self.space == 'weight' else 'parameters'} of this "
                            f"model have no anchor (e.g. {', '.join(missing[:3])})")
        if wrong:
            problems.append(f"{len(wrong)} shapes differ (e.g. {'; '.join(wrong[:3])})")
        if self.space == "param":
            extra = [n for n in have if n not in want]
            if extra:
                problems.append(f"{len(extra)} anchor tensors are not trainable parameters of this model "
                                f"(e.g. {', '.join(extra[:3])})")
        if problems:
            raise AnchorMismatchError(
                f"This global gradient ({self.space} space) does not fit the model: " + "; ".join(problems) +
                ". Recompute it for this model (dba anchor) or load the model it was made for.")


def _anchor_targets(model, space: Space) -> dict[str, tuple[int, ...]]:
    """The tensors an anchor in ``space`` must cover for ``model``, with their shapes."""
    if space == "weight":
        layers = lora_layers(model)
        if not layers:
            raise DBAError("A weight-space anchor needs a LoRA model (no LoRA layers found); use space='param' for "
                           "full fine-tuning.")
        return {n: _out_in(m) for n, m in layers.items()}
    return {n: tuple(p.shape) for n, p in trainable_parameters(model).items()}


# --------------------------------------------------------------------------------------------------------------------
# Compression


def choose_rank(singular_values: torch.Tensor, rank: int | None, energy: float | None) -> int:
    """The kept rank: ``rank`` if given (capped at the full rank), else the smallest k whose leading singular values
    keep at least ``energy`` of Σσ²; full rank when both are None."""
    full = singular_values.numel()
    if rank is not None:
        return max(1, min(int(rank), full))
    if energy is None:
        return full
    e = singular_values.double() ** 2
    total = e.sum()
    if total <= 0:
        return 1
    cum = torch.cumsum(e, 0) / total
    # smallest k with cum[k-1] >= energy (tolerate round-off at energy=1)
    k = int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype, device=cum.device) - 1e-12).item()) + 1
    return max(1, min(k, full))


def choose_ranks_total(spectra: dict[str, torch.Tensor], shapes: dict[str, tuple[int, int]],
                       energy: float) -> dict[str, int]:
    """Ranks that keep ``energy`` of the anchor's TOTAL energy Σ_l ‖Ĝ_l‖² in the fewest stored floats.

    Why: a per-matrix rule keeps 90% of every matrix, so noisy, flat-spectrum matrices that hold little of the total
    still get large ranks. Here singular values of all matrices are taken greedily in order of σ² per stored float
    (m + n for one more column of US and V); within one matrix that order is its own, so each keeps a prefix
    (at least rank 1)."""
    items, total = [], 0.0
    for name, s in spectra.items():
        m, n = shapes[name]
        e = (s.double() ** 2).tolist()
        total += sum(e)
        items += [(v / (m + n), v, name) for v in e]
    items.sort(key=lambda t: -t[0])
    ranks = {name: 0 for name in spectra}
    acc = 0.0
    for _, v, name in items:
        if acc >= energy * total:
            break
        ranks[name] += 1
        acc += v
    return {k: max(v, 1) for k, v in ranks.items()}


def compress(matrix: torch.Tensor, rank: int | None = None, energy: float | None = None):
    """Truncated SVD of one matrix: returns (US, V, all singular values, energy kept)."""
    m = matrix.float()
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    k = choose_rank(s, rank, energy)
    e = s.double() ** 2
    kept = float(e[:k].sum() / e.sum()) if e.sum() > 0 else 1.0
    return (u[:, :k] * s[:k]).contiguous(), vh[:k].T.contiguous(), s, kept


# --------------------------------------------------------------------------------------------------------------------
# Estimation


class _WeightGradHooks:
    """Captures dL/dW = Σ_tokens δ·xᵀ of LoRA-adapted base linears without making W trainable.

    A forward hook on each base layer keeps its input x and hangs a tensor hook on its output; when autograd reaches
    that output the hook receives δ = dL/d(output) and adds scale·δᵀx (fp32) into the running estimate. The
    embedding output is made to require grad so that δ reaches even the first layer's base linears.
    """

    def __init__(self, model, layers: dict[str, torch.nn.Module], store: dict[str, torch.Tensor],
                 fisher: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.store, self.scale, self.handles = store, 1.0, []
        self.fisher, self.fisher_scale = fisher, 1.0
        for name, layer in layers.items():
            self.handles.append(layer.base_layer.register_forward_hook(self._forward_hook(name)))
        emb = base_model(model).get_input_embeddings()
        self.handles.append(emb.register_forward_hook(lambda m, i, out: out.requires_grad_(True)))

    def _forward_hook(self, name):
        def hook(module, inputs, output):
            x = inputs[0].detach()

            def on_grad(delta):
                d = delta.reshape(-1, delta.shape[-1]).float()
                xx = x.reshape(-1, x.shape[-1]).float()
                self.store[name].addmm_(d.T, xx, alpha=self.scale)
                if self.fisher is not None:
                    # this batch's dL/dW, squared: its row and column sums feed the factored Fisher diagonal
                    sq = (d.T @ xx).square_()
                    row, col = self.fisher[name]
                    row.add_(sq.sum(1), alpha=self.fisher_scale)
                    col.add_(sq.sum(0), alpha=self.fisher_scale)

            if output.requires_grad:
                output.register_hook(on_grad)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def _weights_checksum(model) -> float:
    """A cheap float64 checksum of every parameter (quantised ones by their packed storage)."""
    total = 0.0
    with torch.no_grad():
        for p in model.parameters():
            t = p.detach()
            total += float(t.double().sum()) if t.is_floating_point() else float(t.to(torch.float64).sum())
    return total


def estimate_global_gradient(
    model,
    batches: Iterable[dict],
    *,
    space: Space | Literal["auto"] = "auto",
    estimator: Literal["mean", "ema"] = "mean",
    beta1: float = 0.9,
    rank: int | None = None,
    energy: float | None = 0.9,
    energy_scope: Literal["matrix", "total"] = "matrix",
    max_batches: int | None = None,
    progress: bool = True,
    callback: Callable[[int, int | None, float], None] | None = None,
    base_model_id: str | None = None,
    corpus_name: str | None = None,
    corpus_hash: str | None = None,
    streaming: bool = False,
    oversample: int | None = None,
    sketch_seed: int = 0,
    distributed: bool | None = None,
    fisher: bool = True,
) -> GlobalGradient:
    """Estimate ĝ_G by zero-learning-rate training over ``batches`` (dicts with input_ids, attention_mask, labels).

    - ``space``: ``"weight"`` (LoRA: mean dL/dW of each adapted base linear), ``"param"`` (mean gradient of the
      trainable parameters), ``"auto"`` = weight for LoRA models, param otherwise.
    - ``estimator``: ``"mean"`` exact running mean m_i = m_{i-1} + (g_i − m_{i-1})/i; ``"ema"`` Adam's first moment
      m_i = β1·m_{i-1} + (1−β1)·g_i, bias-corrected by 1/(1−β1^i).
    - compression: ``rank`` (fixed) or ``energy`` (smallest rank keeping that share of ‖Ĝ‖²); both None = dense.
      ``energy_scope``: ``"matrix"`` keeps ``energy`` of each matrix; ``"total"`` keeps ``energy`` of Σ_l ‖Ĝ_l‖²
      with the fewest stored floats (:func:`choose_ranks_total`; much smaller, uneven per matrix).
    - ``callback(done, total, seconds)`` after each batch, for UIs.
    - ``streaming`` (weight space): never hold Ĝ; build each matrix's rank-``rank`` factors in one pass from
      randomised sketches with ``oversample`` extra columns (see :mod:`dba.streaming`; ``energy`` then picks a rank
      up to ``rank`` from the estimated energy).
    - ``fisher``: also keep the diagonal Fisher F = (1/s)·Σ_i g_i⊙g_i of the same per-batch gradients (for EWC; no
      extra pass), Adafactor-factored per matrix into row and column sums (m + n floats instead of m·n); vectors
      dense. In weight space each batch's dL/dW is formed once per layer for it (one extra matmul per layer).
    - ``distributed``: average the estimate across the ranks of an initialised ``torch.distributed`` group,
      weighted by each rank's batch count (None = whenever one with more than one rank is initialised); see
      :mod:`dba.distributed`.

    The weights are checked to be unchanged at the end (a checksum of every parameter before and after).
    """
    _check_estimate_args(estimator, energy_scope, streaming)
    from . import distributed as dist_

    dist_.check_supported(model)
    model = dist_.unwrap_model(model)  # hooks and names live on the plain (PEFT) model, not on a DDP wrapper
    if space == "auto":
        space = "weight" if lora_layers(model) else "param"
    targets = _anchor_targets(model, space)
    device = next(model.parameters()).device
    store, oversample = _new_store(targets, space, streaming, rank, oversample, sketch_seed, device)
    fstore = _new_fisher_store(targets, device) if fisher else None

    # Zero learning rate: gradients are folded into the running means and the weights never move (checked below).
    checksum_before = _weights_checksum(model)
    n, tokens, t0 = _zero_lr_pass(model, batches, space, store, fstore, estimator=estimator, beta1=beta1,
                                  max_batches=max_batches, progress=progress, callback=callback, device=device)
    n, tokens, world = _combine_estimate(store, fstore, n, tokens, estimator=estimator, beta1=beta1,
                                         distributed=distributed)
    if _weights_checksum(model) != checksum_before:
        raise AssertionError("weights changed during zero-learning-rate estimation")  # a bug, never user error
    seconds = time.perf_counter() - t0

    g = _compress_store(store, fstore, space, rank=rank, energy=energy, energy_scope=energy_scope)
    g.meta = _anchor_meta(model, targets, store, space=space, rank=rank, energy=energy, energy_scope=energy_scope,
                          corpus_name=corpus_name, corpus_hash=corpus_hash, batches=n, tokens=tokens,
                          estimator=estimator, beta1=beta1, seconds=seconds, streaming=streaming,
                          oversample=oversample, world=world, fisher=fisher, base_model_id=base_model_id)
    return g


def _anchor_meta(model, targets: dict, store: dict, *, space, rank, energy, energy_scope, corpus_name, corpus_hash,
                 batches: int, tokens: int, estimator, beta1, seconds: float, streaming, oversample, world: int,
                 fisher: bool, base_model_id) -> dict:
    """The anchor's provenance and settings, saved with it (what it was estimated from, how, and how long it took)."""
    return {
        "base_model": base_model_id or getattr(base_model(model).config, "_name_or_path", None),
        "weight_fingerprint": weight_fingerprint(model),
        "targets": {n: list(s) for n, s in targets.items()},
        "space": space,
        "rank": rank if rank is not None or not streaming else store_rank(store),
        "energy": energy,
        "energy_scope": energy_scope,
        "corpus": corpus_name,
        "corpus_hash": corpus_hash,
        "batches": batches,
        "tokens": tokens,
        "estimator": estimator,
        "beta1": beta1 if estimator == "ema" else None,
        "seconds": round(seconds, 3),
        "streaming": bool(streaming),
        "oversample": oversample if streaming else None,
        "world_size": world,
        "fisher": "adafactor-row-col" if fisher else None,
        "library_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _check_estimate_args(estimator: str, energy_scope: str, streaming: bool) -> None:
    if estimator not in ("mean", "ema"):
        raise DBAError(f"Unknown estimator {estimator!r}; use 'mean' or 'ema'.")
    if energy_scope not in ("matrix", "total"):
        raise DBAError(f"Unknown energy_scope {energy_scope!r}; use 'matrix' or 'total'.")
    if energy_scope == "total" and streaming:
        raise DBAError("energy_scope='total' needs every matrix's spectrum before choosing ranks, which the one-pass "
                       "streaming anchor does not have; use energy_scope='matrix' with streaming.")


def _new_store(targets: dict, space: str, streaming: bool, rank, oversample, sketch_seed: int, device):
    """The running mean of the gradient: a zero tensor per target, or (streaming) a randomised sketch per matrix.
    Returns (store, the oversampling used)."""
    if streaming:
        from .streaming import DEFAULT_OVERSAMPLE, make_sketches

        if space != "weight":
            raise DBAError("The streaming anchor is for weight space (QLoRA/LoRA): in parameter space the "
                           "gradients are held by backward anyway; use streaming=False.")
        oversample = DEFAULT_OVERSAMPLE if oversample is None else oversample
        store, _tests = make_sketches(targets, rank, oversample, sketch_seed, device)
    else:
        store = {n: torch.zeros(shape, dtype=torch.float32, device=device) for n, shape in targets.items()}
    return store, oversample


def _new_fisher_store(targets: dict, device) -> dict:
    """The Fisher's running mean: (row, col) sums per matrix, or a dense tensor per vector."""
    return {n: ((torch.zeros(sh[0], dtype=torch.float32, device=device),
                 torch.zeros(sh[1], dtype=torch.float32, device=device)) if len(sh) == 2
                else torch.zeros(sh, dtype=torch.float32, device=device))
            for n, sh in targets.items()}


def _zero_lr_pass(model, batches, space: str, store: dict, fstore: dict | None, *, estimator, beta1, max_batches,
                  progress, callback, device):
    """Forward and backward over each batch without an optimiser step, folding each gradient into ``store`` (and
    its square into ``fstore``). Returns (batches used, tokens, the time it started)."""
    from tqdm.auto import tqdm

    params = trainable_parameters(model) if space == "param" else {}
    hooks = _WeightGradHooks(model, lora_layers(model), store, fstore) if space == "weight" else None
    was_training = model.training
    # eval(): no dropout, so the estimate is deterministic; gradients still flow.
    model.eval()
    total = max_batches if max_batches is not None else (len(batches) if hasattr(batches, "__len__") else None)
    bar = tqdm(total=total, desc="global gradient", unit="batch", disable=not progress)
    n = tokens = 0
    t0 = time.perf_counter()
    try:
        for batch in batches:
            if max_batches is not None and n >= max_batches:
                break
            n += 1
            add = _decay_running_means(store, fstore, hooks, n, estimator, beta1)
            model.zero_grad(set_to_none=True)
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise DBAError(f"Non-finite loss ({loss.item()}) on general batch {n}; check the corpus and dtype.")
            loss.backward()  # weight space: the hooks add this batch's dL/dW as backward runs
            if space == "param":
                _add_param_gradients(params, store, fstore, add, n)
            tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if callback is not None:
                callback(n, total, time.perf_counter() - t0)
    finally:
        bar.close()
        if hooks is not None:
            hooks.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return n, tokens, t0


def _decay_running_means(store: dict, fstore: dict | None, hooks, n: int, estimator, beta1) -> float:
    """Before batch n, fold the running estimate in place: m <- keep·m (the batch then adds add·g_n). Returns add."""
    keep, add = ((n - 1) / n, 1.0 / n) if estimator == "mean" else (beta1, 1.0 - beta1)
    for t in store.values():
        t.mul_(keep)
    if fstore is not None:  # the Fisher is always the exact mean over batches
        for t in _fisher_tensors(fstore):
            t.mul_((n - 1) / n)
    if hooks is not None:
        hooks.scale = add
        hooks.fisher_scale = 1.0 / n
    return add


def _add_param_gradients(params: dict, store: dict, fstore: dict | None, add: float, n: int) -> None:
    """Parameter space: add this batch's gradients (and their squares, for the Fisher) to the running means."""
    for name, p in params.items():
        if p.grad is not None:
            store[name].add_(p.grad.float(), alpha=add)
            if fstore is not None:
                sq = p.grad.float().square()
                if sq.dim() == 2:
                    fstore[name][0].add_(sq.sum(1), alpha=1.0 / n)
                    fstore[name][1].add_(sq.sum(0), alpha=1.0 / n)
                else:
                    fstore[name].add_(sq, alpha=1.0 / n)


def _combine_estimate(store: dict, fstore: dict | None, n: int, tokens: int, *, estimator, beta1, distributed):
    """Bias-correct an EMA and average across ranks when distributed. Returns (batches, tokens, world size)."""
    from . import distributed as dist_

    share = distributed is not False and dist_.world_size() > 1  # average with the other ranks below
    if n == 0 and not share:
        raise DBAError("No general batches were given: the global gradient needs at least one batch.")
    if estimator == "ema" and n > 0:  # bias correction, as Adam does for its first moment
        for t in store.values():
            t.div_(1.0 - beta1 ** n)
    world = 1
    if share:
        # every rank ends with the batch-weighted mean of all ranks' estimates (an exact mean over all batches)
        n_local = n
        if fstore is not None:
            dist_.average_estimate({f"f{i}": t for i, t in enumerate(_fisher_tensors(fstore))}, n_local, tokens)
        n, tokens = dist_.average_estimate(store, n_local, tokens)
        world = dist_.world_size()
    return n, tokens, world


def _compress_store(store: dict, fstore: dict | None, space: str, *, rank, energy, energy_scope) -> GlobalGradient:
    """Ĝ as stored: low-rank factors (from a sketch, a fixed rank or an energy share) or dense; and the Fisher."""
    g = GlobalGradient(space=space)
    total_ranks = None
    if energy_scope == "total" and rank is None and energy is not None:
        # one cheap pass for the singular values of every matrix, then the ranks for the share of the total energy
        mats = {name: t for name, t in store.items() if t.dim() == 2}
        total_ranks = choose_ranks_total({name: torch.linalg.svdvals(t.float()) for name, t in mats.items()},
                                         {name: tuple(t.shape) for name, t in mats.items()}, energy)
    for name, t in store.items():
        if not isinstance(t, torch.Tensor):  # a streaming sketch: factors without ever forming Ĝ
            us, v, s, kept = t.factors(rank, energy)
            g.factors[name] = (us, v)
            g.spectra[name] = s
            g.energy_kept[name] = kept
        elif t.dim() == 2 and (rank is not None or energy is not None):
            us, v, s, kept = compress(t, total_ranks[name] if total_ranks else rank, energy)
            g.factors[name] = (us, v)
            g.spectra[name] = s
            g.energy_kept[name] = kept
        else:
            g.dense[name] = t
            g.energy_kept[name] = 1.0
    for name, f in (fstore or {}).items():
        if isinstance(f, tuple):
            g.fisher_factors[name] = f
        else:
            g.fisher_dense[name] = f
    return g


def _fisher_tensors(fstore: dict) -> list[torch.Tensor]:
    return [x for f in fstore.values() for x in (f if isinstance(f, tuple) else (f,))]


def store_rank(store: dict) -> int | None:
    """The target rank of a streaming store's sketches (None for a dense store)."""
    return next((t.rank for t in store.values() if hasattr(t, "rank")), None)


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
