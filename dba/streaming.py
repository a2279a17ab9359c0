"""Streaming low-rank ĝ_G: each adapted matrix's rank-r factors from one pass of randomised sketches.

For models whose dense per-layer gradients do not fit (Llama-2-7B: 224 adapted matrices, 6.5 G floats = 26 GB in
fp32), Ĝ = mean_i Σ_tokens δᵀx is never held whole. Two linear sketches of it are kept instead (Tropp, Yurtsever,
Udell & Cevher, "Practical sketching algorithms for low-rank matrix approximation", SIAM J. Matrix Anal. Appl. 38(4),
2017 — the single-pass scheme of Halko, Martinsson & Tropp 2011 §5.5 with a better-conditioned core):

- the range sketch  Y = Ĝ·Ω   (m × k),  Ω an n × k standard Gaussian matrix, k = r + p (p = ``oversample``);
- the co-range sketch W = Ψᵀ·Ĝ (l × n),  Ψ an m × l standard Gaussian matrix, l = 2k + 1 (Tropp et al.'s choice).

Both are accumulated from each batch's δ (dL/d output, T × m) and x (layer input, T × n) without forming δᵀx:
(δᵀx)·Ω = δᵀ·(x·Ω) and Ψᵀ·(δᵀx) = (δ·Ψ)ᵀ·x. They are linear in Ĝ, so the running mean, the EMA and the average across
ranks of a distributed run all act on the sketches exactly as on Ĝ. At the end:

    Q = orth(Y)                     (m × k)
    X = (Ψᵀ·Q)⁺ · W                 (k × n, least squares)   ⇒ Â = Q·X ≈ Ĝ
    X = U·S·Vᵀ,  keep r             ⇒ stored factors US = Q·U_r·S_r (m × r), V = V_r (n × r)

Accuracy (Tropp et al. 2017, Thm 4.3 and Prop. 6.1), with τ_j(A)² = Σ_{i≥j} σ_i(A)² the tail energy and
f(s, t) = s / (t − s − 1):

    E ‖Ĝ − Â‖²_F ≤ (1 + f(k, l)) · min_{ϱ < k−1} (1 + f(ϱ, k)) · τ_{ϱ+1}(Ĝ)²        (l = 2k+1 makes 1 + f(k, l) = 2)
    ‖Ĝ − [[Â]]_r‖_F ≤ τ_{r+1}(Ĝ) + 2 · ‖Ĝ − Â‖_F                                     (always)

so for the fast-decaying spectra of gradient matrices the rank-r result is close to the optimal rank-r error
τ_{r+1} of the dense-then-SVD anchor (:func:`expected_error_bound` computes the bound for tests and reports).

Memory per m × n matrix: k·m + l·n floats (plus one Ω per distinct n and one Ψ per distinct m, shared by all
layers of that shape) instead of m·n; :func:`memory_report` gives the numbers for a model's shapes.

The energy kept by rank r cannot be read exactly without Ĝ; it is *estimated*: ‖Ĝ‖²_F from the core X and the
least-squares residual of W (unbiased, and exact when the sketch covers Ĝ's range; see ``MatrixSketch._total_energy``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import DBAError

DEFAULT_OVERSAMPLE = 64
"""p: extra columns of the range sketch beyond the kept rank (k = r + p). Measured on the embedded model's gradients
(bench (e)): p = 64 gives a rank-8/32 error 1.05×/1.24× the optimal one, p = 16 gives 1.37×/1.72×; for r = 512 on
Llama-2-7B shapes p = 64 costs 8% more sketch memory than p = 16."""
DEFAULT_STREAMING_RANK = 128
"""r used when a streaming estimate is asked for without a rank (the sketch size must be fixed before the pass)."""


def sketch_sizes(m: int, n: int, rank: int, oversample: int = DEFAULT_OVERSAMPLE) -> tuple[int, int]:
    """(k, l): range-sketch columns k = r + p and co-range-sketch rows l = 2k + 1, capped by the matrix size
    (k = min(m, n) or l = m already determine Ĝ exactly)."""
    if rank < 1:
        raise DBAError(f"The streaming anchor needs a rank of at least 1 (got {rank}).")
    if oversample < 0:
        raise DBAError(f"oversample must be >= 0 (got {oversample}).")
    k = min(rank + oversample, m, n)
    l = min(2 * k + 1, m)
    return k, l


def _gaussian(rows: int, cols: int, seed: int, device) -> torch.Tensor:
    """A standard Gaussian matrix drawn on the CPU from ``seed``: the same on every device and every rank of a
    distributed run (so the per-rank sketches can be averaged)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(rows, cols, generator=g, dtype=torch.float32).to(device)


class TestMatrices:
    """The random test matrices Ω (n × k) and Ψ (m × l), one per (dimension, size) and shared by every layer of that
    shape: each matrix's error bound holds on its own, and sharing keeps their memory negligible."""

    __test__ = False  # not a pytest class

    def __init__(self, seed: int, device):
        self.seed, self.device, self.cache = int(seed), device, {}

    def get(self, kind: str, dim: int, size: int) -> torch.Tensor:
        key = (kind, dim, size)
        if key not in self.cache:
            # a distinct, reproducible stream per (kind, dim, size)
            sub = (self.seed * 1_000_003 + (1 if kind == "omega" else 2) * 7_919 + dim * 31 + size) % (2**63 - 1)
            self.cache[key] = _gaussian(dim, size, sub, self.device)
        return self.cache[key]

    def numel(self) -> int:
        return sum(t.numel() for t in self.cache.values())


class MatrixSketch:
    """The two sketches of one m × n matrix Ĝ, updated in place.

    It quacks like the dense fp32 accumulator it replaces in :func:`dba.global_gradient.estimate_global_gradient`:
    ``addmm_(δᵀ, x, alpha)`` adds alpha·δᵀx, ``mul_(c)`` and ``div_(c)`` scale Ĝ — each applied to the sketches.
    """

    def __init__(self, shape: tuple[int, int], rank: int, oversample: int, tests: TestMatrices):
        m, n = shape
        self.shape, self.rank, self.oversample = (m, n), int(rank), int(oversample)
        self.k, self.l = sketch_sizes(m, n, rank, oversample)
        self.omega = tests.get("omega", n, self.k)          # n × k
        self.psi_t = tests.get("psi", m, self.l).T          # l × m (a view of the shared Ψ)
        self.y = torch.zeros(m, self.k, dtype=torch.float32, device=tests.device)   # Ĝ·Ω
        self.w = torch.zeros(self.l, n, dtype=torch.float32, device=tests.device)   # Ψᵀ·Ĝ

    # ---- the accumulator interface ---------------------------------------------------------------------------------
    def dim(self) -> int:
        return 2

    def addmm_(self, delta_t: torch.Tensor, x: torch.Tensor, alpha: float = 1.0) -> "MatrixSketch":
        """Ĝ += alpha·δᵀx for δᵀ (m × T) and x (T × n), as Y += alpha·δᵀ(xΩ) and W += alpha·(Ψᵀδᵀ)x."""
        self.y.addmm_(delta_t, x @ self.omega, alpha=alpha)
        self.w.addmm_(self.psi_t @ delta_t, x, alpha=alpha)
        return self

    def add_(self, g: torch.Tensor, alpha: float = 1.0) -> "MatrixSketch":
        """Ĝ += alpha·g for a dense m × n matrix g (tests and small layers)."""
        self.y.addmm_(g.float(), self.omega, alpha=alpha)
        self.w.addmm_(self.psi_t, g.float(), alpha=alpha)
        return self

    def mul_(self, c: float) -> "MatrixSketch":
        self.y.mul_(c)
        self.w.mul_(c)
        return self

    def div_(self, c: float) -> "MatrixSketch":
        self.y.div_(c)
        self.w.div_(c)
        return self

    def tensors(self) -> list[torch.Tensor]:
        """The state to average across ranks."""
        return [self.y, self.w]

    def numel(self) -> int:
        return self.y.numel() + self.w.numel()

    # ---- reconstruction --------------------------------------------------------------------------------------------
    def norm2_estimate(self) -> float:
        """An unbiased estimate of ‖Ĝ‖²_F from both sketches (E‖Y‖² = k‖Ĝ‖², E‖W‖² = l‖Ĝ‖²)."""
        return (float(self.y.double().pow(2).sum()) + float(self.w.double().pow(2).sum())) / (self.k + self.l)

    @torch.no_grad()
    def approximation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q, X) with Â = Q·X ≈ Ĝ (the un-truncated single-pass approximation; float64)."""
        q, x, _ = self._solve()
        return q, x

    def _solve(self):
        y, w = self.y.double(), self.w.double()
        q, _ = torch.linalg.qr(y)                                  # m × k'
        core_lhs = self.psi_t.double() @ q                         # l × k'
        if core_lhs.device.type == "cuda":  # CUDA's lstsq needs a full-rank tall matrix; a QR solve is the same
            qq, rr = torch.linalg.qr(core_lhs)
            x = torch.linalg.solve_triangular(rr, qq.T @ w, upper=True)
        else:
            x = torch.linalg.lstsq(core_lhs, w).solution           # k' × n
        resid2 = float((w - core_lhs @ x).pow(2).sum())            # the part of W that range(Q) cannot explain
        return q, x, resid2

    def _total_energy(self, x: torch.Tensor, resid2: float) -> float:
        """Estimate of ‖Ĝ‖²_F. With R = (I − QQᵀ)Ĝ, E‖X‖² = ‖QᵀĜ‖² + f(k,l)·‖R‖² and E(resid²) = (l − k)·‖R‖²
        (Gaussian Ψ, independent of Q), so ‖X‖² + (1 − f(k,l))·resid²/(l − k) is unbiased — and exact when the sketch
        covers Ĝ's range (R = 0). With l = 2k + 1, f = 1 and the estimate is ‖X‖² itself."""
        k = x.shape[0]
        x2 = float(x.pow(2).sum())
        if self.k >= min(self.shape):  # Y spans Ĝ's whole range: Â = Ĝ
            return x2
        if self.l - k - 1 > 0:
            return max(x2 + (1.0 - k / (self.l - k - 1)) * resid2 / (self.l - k), 0.0)
        return max(self.norm2_estimate(), x2)

    @torch.no_grad()
    def factors(self, rank: int | None = None, energy: float | None = None):
        """Truncated factors of Â: (US [m, r], V [n, r], singular values of Â [k], estimated energy kept).

        ``rank`` caps the kept rank (default: the sketch's target rank); ``energy`` keeps the smallest rank whose
        share of the *estimated* ‖Ĝ‖² (see :meth:`_total_energy`) reaches it (capped by ``rank``).
        """
        q, x, resid2 = self._solve()
        u, s, v_all = _wide_svd(x)
        cap = max(1, min(self.rank if rank is None else int(rank), s.numel()))
        total = self._total_energy(x, resid2)
        e = s.pow(2)
        r = cap
        if energy is not None and total > 0:
            cum = torch.cumsum(e, 0) / total
            reach = int(torch.searchsorted(cum, torch.tensor(energy, dtype=cum.dtype) - 1e-12).item()) + 1
            r = max(1, min(reach, cap))
        us = (q @ (u[:, :r] * s[:r])).float().contiguous()
        v = v_all[:, :r].float().contiguous()
        kept = float(e[:r].sum() / total) if total > 0 else 1.0
        return us, v, s.float(), min(kept, 1.0)


def _wide_svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of a wide k × n matrix (k ≪ n) as U, S, V with X = U·diag(S)·Vᵀ: a QR of Xᵀ = Q₂R₂ on the device,
    then the SVD of the small k × k matrix R₂ᵀ on the CPU (LAPACK), so no large SVD runs on a GPU."""
    q2, r2 = torch.linalg.qr(x.T)                              # n × k, k × k
    u, s, vh = torch.linalg.svd(r2.T.cpu(), full_matrices=False)
    u, s, vh = u.to(x.device), s.to(x.device), vh.to(x.device)
    return u, s, q2 @ vh.T


def make_sketches(targets: dict[str, tuple[int, ...]], rank: int | None, oversample: int, seed: int,
                  device) -> tuple[dict[str, object], TestMatrices]:
    """A :class:`MatrixSketch` for every 2-D target (vectors stay dense fp32), all sharing one set of test
    matrices."""
    rank = DEFAULT_STREAMING_RANK if rank is None else int(rank)
    tests = TestMatrices(seed, device)
    store: dict[str, object] = {}
    for name, shape in targets.items():
        if len(shape) == 2:
            store[name] = MatrixSketch((int(shape[0]), int(shape[1])), rank, oversample, tests)
        else:
            store[name] = torch.zeros(shape, dtype=torch.float32, device=device)
    return store, tests


# --------------------------------------------------------------------------------------------------------------------
# Theory and bookkeeping (for tests and reports)


def _f(s: int, t: int) -> float:
    return s / (t - s - 1) if t - s - 1 > 0 else math.inf


def expected_error_bound(singular_values: torch.Tensor, k: int, l: int) -> float:
    """Tropp et al. 2017 Thm 4.3 (real Gaussian test matrices): an upper bound on E‖Ĝ − Â‖²_F for the
    *un-truncated* single-pass approximation Â = Q·X, from Ĝ's singular values and the sketch sizes k, l.
    Returns the bound on the squared error. Exact reconstruction (0) when k reaches the matrix's rank."""
    s2 = singular_values.double().pow(2)
    full = s2.numel()
    if k >= full:  # Y spans the whole range of Ĝ: Â = Ĝ exactly
        return 0.0
    tails = torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0])  # tails[j] = Σ_{i>=j} σ_i²
    best = math.inf
    for rho in range(0, k - 1):
        tail = float(tails[rho]) if rho < full else 0.0
        best = min(best, (1.0 + _f(rho, k)) * tail)
    return (1.0 + _f(k, l)) * best


def optimal_error(singular_values: torch.Tensor, rank: int) -> float:
    """τ_{r+1}: the Frobenius error of the best rank-r approximation (the dense-then-SVD anchor's error)."""
    s2 = singular_values.double().pow(2)
    return float(s2[rank:].sum().sqrt())


@dataclass
class MemoryLine:
    """Memory of one matrix shape, in floats."""

    shape: tuple[int, int]
    count: int
    dense: int
    sketch: int
    factors: int


def memory_report(shapes: dict[tuple[int, int], int], rank: int, oversample: int = DEFAULT_OVERSAMPLE,
                  bytes_per_float: int = 4) -> dict:
    """Bytes needed by a dense estimate, by the streaming sketches (plus their shared test matrices) and by the
    stored rank-r factors, for ``shapes`` = {(m, n): how many matrices of that shape}."""
    lines = []
    dims_omega, dims_psi = set(), set()
    for (m, n), count in shapes.items():
        k, l = sketch_sizes(m, n, rank, oversample)
        dims_omega.add((n, k))
        dims_psi.add((m, l))
        lines.append(MemoryLine((m, n), count, m * n * count, (m * k + l * n) * count,
                                (m + n) * min(rank, m, n) * count))
    tests = sum(a * b for a, b in dims_omega | dims_psi)
    dense = sum(x.dense for x in lines)
    sketch = sum(x.sketch for x in lines) + tests
    factors = sum(x.factors for x in lines)
    gb = bytes_per_float / 1e9
    return {"rank": rank, "oversample": oversample, "matrices": sum(shapes.values()),
            "dense_gb": dense * gb, "sketch_gb": sketch * gb, "factors_gb": factors * gb,
            "test_matrices_gb": tests * gb, "saved_gb": (dense - sketch) * gb, "sketch_share": sketch / dense,
            "lines": lines}


def llama_shapes(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int | None = None) -> dict:
    """{(out, in): count} of the 7 adapted linears of every layer of a Llama-style decoder ("all-linear" LoRA)."""
    kv_heads = kv_heads or heads
    kv = hidden // heads * kv_heads
    shapes: dict[tuple[int, int], int] = {}
    for shape in [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),      # q k v o
                  (intermediate, hidden), (intermediate, hidden), (hidden, intermediate)]:  # gate up down
        shapes[shape] = shapes.get(shape, 0) + layers
    return shapes


LLAMA2_7B = dict(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32)
"""Llama-2-7B's shapes (for the memory report)."""
