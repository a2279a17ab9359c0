"""The methods table (dba/methods.py) and the exactness of every method's optimiser step.

- Today's methods (direct, mixture, dba and its ablations, projection, relative, dba-paper) are bit-identical to the
  monolithic DBA step they replaced: ``OldStepDBA`` below is that step, copied verbatim.
- Each Adam-aware variant and baseline is checked against a reference loop written plainly here (hand AdamW), so a
  change of its formula fails a test.
"""
import math

import pytest
import torch

from dba import LoraSettings, load_model
from dba import methods as M
from dba.config import DBAConfig, AnnealConfig, BoostConfig
from dba.errors import DBAError
from dba.global_gradient import GlobalGradient, estimate_global_gradient, lora_layers, trainable_parameters
from dba.optim import DBAOptimizer
from dba.transforms import annealed_lr, boost, boost_weight, dot, similarity, step_scale

from test_engine_math import TwoParams, hand_adamw, param_anchor, rand_batches, rel_err


class OldStepDBA(DBAOptimizer):
    """The numerical part of the DBA step as it was before the transform chain (``DBAOptimizer.step`` in dba/optim.py
    at 7779ef5), verbatim (the pure functions it calls moved unchanged to dba/transforms.py)."""

    @torch.no_grad()
    def step(self, closure=None):
        cfg, T = self.config, self.config.total_steps
        group0 = self.param_groups[0]
        t = group0["dba_t"]
        params = self._params()
        g_d = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        assert all(torch.isfinite(g).all() for g in g_d)   # (the non-finite skip is not part of this comparison)
        g_hat = self.anchor_map(params) if self.anchor_map is not None else None
        norm_d = math.sqrt(float(dot(g_d, g_d)))
        norm_hat = math.sqrt(float(dot(g_hat, g_hat))) if g_hat is not None else 0.0
        rho = similarity(g_d, g_hat, cfg.correction.similarity) if g_hat is not None else 0.0
        gamma = boost_weight(t, T, cfg.boost)
        if cfg.boost.enabled and g_hat is not None:
            if cfg.boost.scale == "relative" and norm_hat > 0:
                g_hat = [h * (norm_d / norm_hat) for h in g_hat]
            g_tilde = boost(g_d, g_hat, gamma, cfg.boost.mode)
        else:
            g_tilde = g_d
        lam = step_scale(rho, cfg.correction)
        lr = annealed_lr(t, T, cfg.anneal)
        for g in self.param_groups:
            g["lr"] = lr * lam
        saved = [p.grad for p in params]
        for p, g in zip(params, g_tilde):
            p.grad = g
        try:
            torch.optim.AdamW.step(self)
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        group0["dba_t"] = t + 1
        self._emit({"step": t, "loss": self.pending_loss, "grad_norm": norm_d, "anchor_norm": norm_hat, "rho": rho,
                    "gamma": gamma, "lam": lam, "lr": lr, "effective_lr": lr * lam, "skipped": False})


OLD_METHODS = ["direct", "mixture", "dba", "dba-no-ggb", "dba-no-dc", "dba-no-al", "dba-projection", "dba-relative",
               "dba-paper"]


def _base(T=8, lr=0.02, k0=0.3):
    return DBAConfig(total_steps=T, boost=BoostConfig(k0=k0), anneal=AnnealConfig(lr=lr), weight_decay=0.01)


def _grads(gen, params):
    return [torch.randn(p.shape, generator=gen) for p in params]


# ------------------------------------------------------------------------------------------------------------- table


def test_table_names_kinds_and_lookup():
    assert list(M.METHODS)[:8] == ["direct", "mixture", "dba", "dba-no-ggb", "dba-no-dc", "dba-no-al",
                                   "dba-projection", "dba-relative"]
    for name in ("dba-paper", "dba-clip", "dba-update", "dba-budget", "dba-update-projection", "dba-conservative",
                 "ewc", "l2sp", "wiseft"):
        assert name in M.METHODS and M.METHODS[name].summary
    assert "dba-ggb-off" not in M.METHODS  # one name per ablation
    for m in M.METHODS.values():
        assert m.kind in ("direct", "mixture", "dba", "baseline") and "\n" not in m.summary
    with pytest.raises(DBAError, match="choose from: direct, mixture, dba"):
        M.get("dba-ggb-off")
    assert M.kind_of("mixture-0.25") == "mixture" and M.kind_of("mixture (r=0.3)") == "mixture"
    assert M.kind_of("dba-no-dc") == "dba" and M.kind_of("dba-update-projection") == "dba"
    assert M.kind_of("ewc") == "baseline" and M.kind_of("wiseft-0.5") == "baseline"
    assert M.kind_of("base model") == "base" and M.kind_of("something") == "other"
    assert M.get("ewc").needs_anchor and not M.get("l2sp").needs_anchor and M.get("mixture").needs_general_data
    assert not M.get("wiseft").trains


def test_optimizer_config_copies_and_changes_one_thing():
    base = _base()
    cfg = M.get("dba-no-dc").optimizer_config(base)
    assert cfg is not base and base.correction.enabled and not cfg.correction.enabled
    assert cfg.boost == base.boost and cfg.anneal == base.anneal
    assert M.get("dba-update").optimizer_config(base).boost.mode == "update"
    assert M.get("dba-clip").optimizer_config(base).boost.clip == "anchor"
    assert M.get("dba-budget").optimizer_config(base).boost.budget == M.BUDGET
    assert M.get("dba-conservative").optimizer_config(base).correction.function == "conservative"
    e = M.get("ewc").optimizer_config(base)
    assert e.penalty.kind == "ewc" and not e.boost.enabled and not e.correction.enabled
    assert DBAConfig.from_dict(e.to_dict()) == e   # new fields round-trip through config.json


def test_every_method_builds_its_config_and_chain():
    for m in M.METHODS.values():
        cfg = m.optimizer_config(DBAConfig())
        assert isinstance(cfg, DBAConfig)
    with pytest.raises(DBAError, match="no field 'mdoe'"):
        M.changes(boost__mdoe="update")(DBAConfig())


def test_chain_table_lists_every_method():
    table = M.chain_table()
    for name in M.METHODS:
        assert f"`{name}`" in table
    assert "boost(convex) → step-scale(paper) → anneal(cosine) → adamw |" in table
    assert "adamw → update-boost" in M.chain("dba-update")


# ------------------------------------------------------------------------------------------------- bit-identity


@pytest.mark.parametrize("name", OLD_METHODS)
def test_old_methods_are_bit_identical_in_param_space(name):
    cfg = M.get(name).optimizer_config(_base())
    a, b = TwoParams(), TwoParams()
    anchor = param_anchor(a) if M.get(name).needs_anchor else None
    new, old = DBAOptimizer(a, anchor, cfg), OldStepDBA(b, anchor, cfg)
    gen = torch.Generator().manual_seed(11)
    for _ in range(5):
        gs = _grads(gen, [a.w, a.b])
        a.w.grad, a.b.grad = gs[0].clone(), gs[1].clone()
        b.w.grad, b.b.grad = gs[0].clone(), gs[1].clone()
        new.step()
        old.step()
        assert new.last_record == old.last_record
    assert torch.equal(a.w, b.w) and torch.equal(a.b, b.b)


@pytest.mark.parametrize("name", ["dba", "dba-projection", "dba-relative", "dba-no-dc", "direct"])
def test_old_methods_are_bit_identical_in_weight_space(name):
    torch.manual_seed(0)
    lm_a = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    torch.manual_seed(0)
    lm_b = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    anchor = estimate_global_gradient(lm_a.model, rand_batches(2), energy=0.9, progress=False, fisher=False)
    cfg = M.get(name).optimizer_config(_base(lr=0.01))
    use = anchor if M.get(name).needs_anchor else None
    new, old = DBAOptimizer(lm_a.model, use, cfg), OldStepDBA(lm_b.model, use, cfg)
    for batch in rand_batches(3, seed=7):
        for lm, opt in ((lm_a, new), (lm_b, old)):
            lm.model(**batch).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        assert new.last_record == old.last_record
    pa, pb = trainable_parameters(lm_a.model), trainable_parameters(lm_b.model)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)


# ------------------------------------------------------------------------------------------ Adam-aware variants


def _run(name, steps=3, clip=None, base=None, seed=21):
    model = TwoParams()
    anchor = param_anchor(model)
    cfg = M.get(name).optimizer_config(base or _base())
    opt = DBAOptimizer(model, anchor if M.get(name).needs_anchor else None, cfg)
    w0, b0 = model.w.detach().clone(), model.b.detach().clone()
    gen = torch.Generator().manual_seed(seed)
    gs, recs = [], []
    for _ in range(steps):
        gw, gb = _grads(gen, [model.w, model.b])
        model.w.grad, model.b.grad = gw.clone(), gb.clone()
        if clip is not None:
            opt.note_clip(*clip)
        opt.step()
        gs.append((gw, gb))
        recs.append(dict(opt.last_record))
    return model, anchor, (w0, b0), gs, recs


def _cos(gw, gb, hw, hb):
    return float((gw * hw).sum() + (gb * hb).sum()) / math.sqrt(
        float((gw ** 2).sum() + (gb ** 2).sum()) * float((hw ** 2).sum() + (hb ** 2).sum()))


def test_dba_clip_scales_the_anchor_by_the_loops_clip_factor():
    raw, max_norm = 7.0, 1.0
    model, anchor, (w0, _), gs, recs = _run("dba-clip", clip=(raw, max_norm))
    c = max_norm / (raw + 1e-6)
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    plan = []
    for t, ((gw, gb), rec) in enumerate(zip(gs, recs)):
        gamma = 0.3 * (1 - t / 8)
        lam = 1 + (1 - _cos(gw, gb, hw, hb)) / 2
        lr = 0.02 * 0.5 * (1 + math.cos(math.pi * t / 8))
        assert rec["clip_factor"] == pytest.approx(c) and rec["lam"] == pytest.approx(lam)
        plan.append((gamma * c * hw + (1 - gamma) * gw, lr * lam))
    assert rel_err(model.w.detach(), hand_adamw(w0, plan, wd=0.01)) < 1e-6
    # without a clip report the factor is 1: plain dba
    m2, *_ = _run("dba-clip")
    m3, *_ = _run("dba")
    assert torch.equal(m2.w, m3.w)


def test_dba_update_adds_the_preconditioned_anchor_to_adams_update():
    model, anchor, (w0, _), gs, recs = _run("dba-update", steps=4)
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    p, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    b1, b2, eps, wd = 0.9, 0.999, 1e-8, 0.01
    for k, ((gw, gb), rec) in enumerate(zip(gs, recs), start=1):
        t = k - 1
        gamma = 0.3 * (1 - t / 8)
        lam = 1 + (1 - _cos(gw, gb, hw, hb)) / 2
        lr = 0.02 * 0.5 * (1 + math.cos(math.pi * t / 8)) * lam
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * gw           # moments from g_D alone
        v = b2 * v + (1 - b2) * gw * gw
        den = (v / (1 - b2 ** k)).sqrt() + eps
        p = p - lr * (m / (1 - b1 ** k)) / den - lr * gamma * (hw / den).clamp(-1, 1)  # ≤ a full Adam step
        assert rec["gamma"] == pytest.approx(gamma)
    assert rel_err(model.w.detach(), p) < 1e-6


def test_dba_update_projection_removes_the_conflicting_part_of_the_update():
    model, anchor, (w0, b0), gs, recs = _run("dba-update-projection", steps=4)
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    P = [w0.clone(), b0.clone()]
    Mo = [torch.zeros_like(w0), torch.zeros_like(b0)]
    V = [torch.zeros_like(w0), torch.zeros_like(b0)]
    b1, b2, eps, wd = 0.9, 0.999, 1e-8, 0.01
    projected = 0
    for k, ((gw, gb), rec) in enumerate(zip(gs, recs), start=1):
        t = k - 1
        lam = 1 + (1 - _cos(gw, gb, hw, hb)) / 2
        lr = 0.02 * 0.5 * (1 + math.cos(math.pi * t / 8)) * lam
        u = []
        for i, g in enumerate((gw, gb)):
            P[i] = P[i] * (1 - lr * wd)
            Mo[i] = b1 * Mo[i] + (1 - b1) * g
            V[i] = b2 * V[i] + (1 - b2) * g * g
            u.append((Mo[i] / (1 - b1 ** k)) / ((V[i] / (1 - b2 ** k)).sqrt() + eps))
        c = float((u[0] * hw).sum() + (u[1] * hb).sum())
        if c < 0:
            projected += 1
            u = [u[0] - c / float((hw ** 2).sum() + (hb ** 2).sum()) * hw,
                 u[1] - c / float((hw ** 2).sum() + (hb ** 2).sum()) * hb]
        P = [P[0] - lr * u[0], P[1] - lr * u[1]]
        assert rec["update_dot_anchor"] == pytest.approx(c, rel=1e-5)
    assert rel_err(model.w.detach(), P[0]) < 1e-6 and rel_err(model.b.detach(), P[1]) < 1e-6
    assert projected > 0, "the test data must exercise the projection"


def test_dba_budget_stops_the_boost_once_the_general_gain_reaches_it():
    base = _base(T=20, lr=0.2, k0=0.5)
    base.boost.budget = 0.5
    model, anchor, (w0, b0), gs, recs = _run("dba", steps=12, base=base, seed=3)
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    # replay by hand: gain_t = ⟨ĝ, θ_0 − θ_t⟩ before step t; γ_t = 0 once gain_t ≥ budget
    p = [w0.clone(), b0.clone()]
    mo = [torch.zeros_like(w0), torch.zeros_like(b0)]
    v = [torch.zeros_like(w0), torch.zeros_like(b0)]
    stopped = 0
    for k, ((gw, gb), rec) in enumerate(zip(gs, recs), start=1):
        t = k - 1
        gain = float((hw * (w0 - p[0])).sum() + (hb * (b0 - p[1])).sum())
        assert rec["general_gain"] == pytest.approx(gain, rel=1e-4, abs=1e-6)
        gamma = 0.0 if gain >= 0.5 else 0.5 * (1 - t / 20)
        stopped += gamma == 0.0
        assert rec["gamma"] == pytest.approx(gamma)
        lam = 1 + (1 - _cos(gw, gb, hw, hb)) / 2
        lr = 0.2 * 0.5 * (1 + math.cos(math.pi * t / 20)) * lam
        for i, (g, h) in enumerate(((gw, hw), (gb, hb))):
            gt = gamma * h + (1 - gamma) * g
            p[i] = p[i] * (1 - lr * 0.01)
            mo[i] = 0.9 * mo[i] + 0.1 * gt
            v[i] = 0.999 * v[i] + 0.001 * gt * gt
            p[i] = p[i] - lr * (mo[i] / (1 - 0.9 ** k)) / ((v[i] / (1 - 0.999 ** k)).sqrt() + 1e-8)
    assert 0 < stopped < len(gs), "the test must cross the budget"
    assert rel_err(model.w.detach(), p[0]) < 1e-5


def test_weight_space_linearised_gain_equals_the_dense_effective_weight_change():
    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    model = lm.model
    anchor = estimate_global_gradient(model, rand_batches(2), rank=3, energy=None, progress=False, fisher=False)
    params = list(trainable_parameters(model).values())
    from dba.optim import AnchorMap
    am = AnchorMap(model, anchor, params)
    start = {n: (l.lora_B["default"].weight.detach().clone(), l.lora_A["default"].weight.detach().clone())
             for n, l in lora_layers(model).items()}
    origin = am.inner(params)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    want = 0.0
    for n, l in lora_layers(model).items():
        s = l.scaling["default"]
        b0, a0 = start[n]
        dw = s * (l.lora_B["default"].weight @ l.lora_A["default"].weight - b0 @ a0)
        want += float((anchor.matrix(n) * -dw).sum().detach())       # ⟨Ĝ, W_0 − W_t⟩
    assert origin - am.inner(params) == pytest.approx(want, rel=1e-4)


def test_dba_conservative_shrinks_the_step_on_conflict():
    model, anchor, (w0, _), gs, recs = _run("dba-conservative")
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    plan = []
    for t, ((gw, gb), rec) in enumerate(zip(gs, recs)):
        rho = _cos(gw, gb, hw, hb)
        lam = max(0.5, 1 - (1 - rho) / 4)
        assert rec["lam"] == pytest.approx(lam) and (rho >= 0 or lam < 1)
        gamma = 0.3 * (1 - t / 8)
        plan.append((gamma * hw + (1 - gamma) * gw, 0.02 * 0.5 * (1 + math.cos(math.pi * t / 8)) * lam))
    assert rel_err(model.w.detach(), hand_adamw(w0, plan, wd=0.01)) < 1e-6


def test_boosted_clip_clips_the_mixed_gradient_to_the_loops_norm():
    base = _base()
    base.boost.clip = "boosted"
    model, anchor, (w0, _), gs, recs = _run("dba", base=base, clip=(3.0, 0.5))
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    plan = []
    for t, ((gw, gb), rec) in enumerate(zip(gs, recs)):
        gamma = 0.3 * (1 - t / 8)
        mw, mb = gamma * hw + (1 - gamma) * gw, gamma * hb + (1 - gamma) * gb
        n = math.sqrt(float((mw ** 2).sum() + (mb ** 2).sum()))
        c = min(1.0, 0.5 / (n + 1e-6))
        lam = 1 + (1 - _cos(gw, gb, hw, hb)) / 2
        plan.append((c * mw, 0.02 * 0.5 * (1 + math.cos(math.pi * t / 8)) * lam))
    assert rel_err(model.w.detach(), hand_adamw(w0, plan, wd=0.01)) < 1e-6


# ------------------------------------------------------------------------------------------------- baselines


def test_l2sp_adds_alpha_times_the_distance_to_the_start():
    model, _, (w0, b0), gs, recs = _run("l2sp", steps=4)
    alpha = 0.1
    p, m, v = w0.clone(), torch.zeros_like(w0), torch.zeros_like(w0)
    for k, ((gw, _), rec) in enumerate(zip(gs, recs), start=1):
        t = k - 1
        lr = 0.02 * 0.5 * (1 + math.cos(math.pi * t / 8))
        g = gw + alpha * (p - w0)
        p = p * (1 - lr * 0.01)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p = p - lr * (m / (1 - 0.9 ** k)) / ((v / (1 - 0.999 ** k)).sqrt() + 1e-8)
        assert rec["gamma"] == 0.0 and rec["lam"] == 1.0
    assert rel_err(model.w.detach(), p) < 1e-6


def _fisher_anchor(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    a = param_anchor(model)
    r, c = torch.rand(3, generator=g) + 0.1, torch.rand(4, generator=g) + 0.1
    a.fisher_factors = {"w": (r, c * r.sum() / c.sum())}   # row and column sums of one matrix have the same total
    a.fisher_dense = {"b": torch.rand(4, generator=g)}
    return a


def test_ewc_param_space_gradient_equals_autograd_of_the_penalty():
    model = TwoParams()
    anchor = _fisher_anchor(model)
    cfg = M.get("ewc").optimizer_config(_base())
    cfg.penalty.strength = 0.7
    opt = DBAOptimizer(model, anchor, cfg)
    w0, b0 = model.w.detach().clone(), model.b.detach().clone()
    with torch.no_grad():
        model.w.add_(torch.randn(3, 4))
        model.b.add_(torch.randn(4))
    fw, fb = anchor.fisher("w"), anchor.fisher("b")
    r, c = anchor.fisher_factors["w"]
    assert torch.allclose(fw.sum(1), r) and torch.allclose(fw.sum(0), c)   # the factors keep row and column sums
    mean = float((fw.sum() + fb.sum()) / (fw.numel() + fb.numel()))
    assert anchor.fisher_mean() == pytest.approx(mean)
    w, b = model.w.detach().clone().requires_grad_(), model.b.detach().clone().requires_grad_()
    pen = 0.7 / mean / 2 * ((fw * (w - w0) ** 2).sum() + (fb * (b - b0) ** 2).sum())
    want = torch.autograd.grad(pen, [w, b])
    got = opt.chain.gradient[[t.name for t in opt.chain.gradient].index("penalty(ewc)")].grads([model.w, model.b])
    assert rel_err(got[0], want[0]) < 1e-6 and rel_err(got[1], want[1]) < 1e-6


def test_ewc_weight_space_gradient_equals_autograd_on_the_effective_weight_change():
    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    model = lm.model
    anchor = estimate_global_gradient(model, rand_batches(2), energy=0.9, progress=False)
    assert anchor.has_fisher()
    params = list(trainable_parameters(model).values())
    from dba.optim import AnchorMap
    am = AnchorMap(model, anchor, params)
    grads = am.ewc_gradient(params, strength=0.3)
    layers = lora_layers(model)
    start = {n: (l.lora_B["default"].weight.detach().clone(), l.lora_A["default"].weight.detach().clone())
             for n, l in layers.items()}
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p) * 0.05)
    mean = anchor.fisher_mean()
    pen = 0.0
    for n, l in layers.items():
        s = l.scaling["default"]
        b0, a0 = start[n]
        dw = s * (l.lora_B["default"].weight @ l.lora_A["default"].weight - b0 @ a0)
        pen = pen + 0.3 / mean / 2 * (anchor.fisher(n) * dw ** 2).sum()
    want = torch.autograd.grad(pen, params)
    got = grads(params)
    for g, w in zip(got, want):
        assert rel_err(g, w) < 1e-4


def test_fisher_is_the_mean_squared_per_batch_gradient_param_space():
    lm = load_model("tiny", dtype="float32")
    model = lm.model
    batches = rand_batches(3, seed=2)
    g = estimate_global_gradient(model, batches, space="param", rank=None, energy=None, progress=False)
    model.eval()
    sq = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        for n, p in trainable_parameters(model).items():
            if p.grad is not None:
                sq[n] += p.grad ** 2 / 3
    model.zero_grad(set_to_none=True)
    name = "model.layers.0.mlp.up_proj.weight"
    r, c = g.fisher_factors[name]
    assert rel_err(r, sq[name].sum(1)) < 1e-5 and rel_err(c, sq[name].sum(0)) < 1e-5
    vec = next(n for n, t in sq.items() if t.dim() == 1 and t.norm() > 0)
    assert rel_err(g.fisher_dense[vec], sq[vec]) < 1e-5
    s = g.summary()
    assert s["fisher_mb"] is not None and s["fisher_mb"] < s["dense_mb"]


def test_fisher_weight_space_equals_squared_autograd_weight_gradients(tmp_path):
    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    model = lm.model
    batches = rand_batches(2, seed=4)
    g = estimate_global_gradient(model, batches, energy=0.9, progress=False)
    layers = lora_layers(model)
    weights = [l.base_layer.weight.requires_grad_(True) for l in layers.values()]
    model.eval()
    per_batch = [torch.autograd.grad(model(**b).loss, weights) for b in batches]   # dL/dW of each batch
    sq = {n: sum(g[i] ** 2 for g in per_batch) / len(batches) for i, n in enumerate(layers)}
    for n in layers:
        r, c = g.fisher_factors[n]
        assert rel_err(r, sq[n].sum(1)) < 1e-4 and rel_err(c, sq[n].sum(0)) < 1e-4
    # the anchor file carries it; an anchor file without it still loads, and EWC then refuses clearly
    h = GlobalGradient.load(g.save(tmp_path / "a.safetensors"))
    assert set(h.fisher_factors) == set(g.fisher_factors)
    assert all(torch.equal(h.fisher_factors[n][0], g.fisher_factors[n][0]) for n in g.fisher_factors)
    g.fisher_factors, g.fisher_dense = {}, {}
    old = GlobalGradient.load(g.save(tmp_path / "old.safetensors"))
    assert not old.has_fisher() and old.summary()["fisher_mb"] is None
    for l in layers.values():
        l.base_layer.weight.requires_grad_(False)
    with pytest.raises(DBAError, match="no(ne)?.*Fisher|Fisher.*none"):
        DBAOptimizer(model, old, M.get("ewc").optimizer_config(_base()))


def test_ewc_without_an_anchor_is_a_clear_error():
    with pytest.raises(DBAError, match="EWC needs a global gradient"):
        DBAOptimizer(TwoParams(), None, M.get("ewc").optimizer_config(_base()))


# ------------------------------------------------------------------------------------------------------ WiSE-FT


def test_wiseft_lora_scales_the_adapter_delta_exactly():
    from dba.wiseft import curve, interpolated

    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))
    model = lm.model
    with torch.no_grad():
        for l in lora_layers(model).values():
            l.lora_B["default"].weight.normal_(0, 0.1)
    batch = rand_batches(1)[0]
    model.eval()
    with torch.no_grad():
        tuned = model(**batch).logits
        with interpolated(model, 0.25) as m:
            got = m(**batch).logits
            for l in lora_layers(model).values():
                assert l.scaling["default"] == pytest.approx(0.25 * 2.0)
        with model.disable_adapter():
            base = model(**batch).logits
        with interpolated(model, 0.0) as m:
            assert torch.equal(m(**batch).logits, base)
        assert torch.equal(model(**batch).logits, tuned)   # restored
        # by hand: merge W + α·s·B·A into the base weights and run without the adapter
        saved = {n: l.base_layer.weight.detach().clone() for n, l in lora_layers(model).items()}
        for n, l in lora_layers(model).items():
            l.base_layer.weight += 0.25 * l.scaling["default"] * l.lora_B["default"].weight @ l.lora_A["default"].weight
        with model.disable_adapter():
            merged = model(**batch).logits
        for n, l in lora_layers(model).items():
            l.base_layer.weight.copy_(saved[n])
    assert rel_err(got, merged) < 1e-5
    pts = curve(model, lambda m: {"s": 1.0})
    assert [p["alpha"] for p in pts] == [0.25, 0.5, 0.75]


def test_wiseft_full_interpolates_every_parameter():
    from dba.wiseft import interpolated

    model = TwoParams()
    base = {"w": torch.zeros(3, 4), "b": torch.ones(4)}
    tuned_w = model.w.detach().clone()
    with interpolated(model, 0.75, base) as m:
        assert torch.equal(m.w, (1 - 0.75) * base["w"] + 0.75 * tuned_w)
        assert torch.equal(m.b.detach(), 0.25 * base["b"] + 0.75 * TwoParams().b.detach())
    assert torch.equal(model.w, tuned_w)
    with pytest.raises(DBAError, match="base weights"):
        with interpolated(model, 0.5):
            pass
    with pytest.raises(DBAError, match=r"\[0, 1\]"):
        with interpolated(model, 1.5, base):
            pass
