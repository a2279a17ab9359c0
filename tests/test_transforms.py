"""Each gradient transform of the DBA step (dba/transforms.py) on its own, against hand computation."""
import math

import pytest
import torch

from dba.config import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig
from dba.errors import DBAError
from dba.transforms import (EWC, L2SP, Anneal, Boost, BoostWeight, Budget, ClipBoosted, ClipScale, Projection,
                            RelativeScale, Similarity, StepScale, StepState, UpdateBoost, UpdateProjection,
                            build_chain, clip_factor, fisher_matrix)


def state(g_d, g_hat, params=None, **kw):
    norm_d = math.sqrt(sum(float((x ** 2).sum()) for x in g_d))
    norm_hat = math.sqrt(sum(float((x ** 2).sum()) for x in g_hat)) if g_hat is not None else 0.0
    params = params if params is not None else [torch.nn.Parameter(torch.zeros_like(x)) for x in g_d]
    return StepState(t=kw.pop("t", 2), total_steps=kw.pop("total_steps", 10), params=params, g_d=g_d, g_hat=g_hat,
                     g=list(g_d), norm_d=norm_d, norm_hat=norm_hat, **kw)


D = [torch.tensor([1.0, 0.0]), torch.tensor([2.0])]
H2 = [torch.tensor([-1.0, 1.0]), torch.tensor([-1.0])]   # ⟨D,H2⟩ = -1 - 2 = -3, ‖H2‖² = 3, ‖D‖² = 5


def test_similarity():
    s = state(D, H2)
    Similarity("cosine")(s)
    assert s.rho == pytest.approx(-3 / math.sqrt(5 * 3))
    Similarity("projection")(s)
    assert s.rho == pytest.approx(-1.0)


def test_relative_scale_gives_the_anchor_the_domain_norm():
    s = state(D, H2)
    RelativeScale()(s)
    assert math.sqrt(sum(float((h ** 2).sum()) for h in s.g_hat)) == pytest.approx(math.sqrt(5))
    assert torch.allclose(s.g_hat[0], H2[0] * math.sqrt(5 / 3))


def test_clip_scale_multiplies_the_anchor_by_the_clip_factor():
    s = state(D, H2, clip=0.25)
    ClipScale()(s)
    assert torch.equal(s.g_hat[0], H2[0] * 0.25) and torch.equal(s.g_hat[1], H2[1] * 0.25)
    assert torch.equal(s.g[0], D[0])   # the domain gradient is untouched


def test_clip_factor_is_what_clip_grad_norm_applies():
    p = torch.nn.Parameter(torch.zeros(5))
    p.grad = torch.arange(5.0)
    raw = float(p.grad.norm())
    before = p.grad.clone()
    torch.nn.utils.clip_grad_norm_([p], 1.5)
    assert torch.allclose(p.grad, before * clip_factor(raw, 1.5), rtol=1e-6)
    assert clip_factor(0.5, 1.0) == 1.0


def test_boost_weight():
    s = state(D, H2, t=5, total_steps=10)
    BoostWeight(BoostConfig(k0=0.4))(s)
    assert s.gamma == pytest.approx(0.2)
    BoostWeight(BoostConfig(enabled=False))(s)
    assert s.gamma == 0.0


def test_budget_zeroes_gamma_at_the_budget():
    s = state(D, H2, gamma=0.3)
    Budget(budget=1.0, inner=lambda ps: 2.0, origin=2.5)(s)     # gain 0.5 < 1
    assert s.gamma == 0.3 and s.extra["general_gain"] == pytest.approx(0.5)
    Budget(budget=1.0, inner=lambda ps: 1.0, origin=2.0)(s)     # gain 1.0 ≥ 1
    assert s.gamma == 0.0


def test_boost_convex_and_additive():
    s = state(D, H2, gamma=0.25)
    Boost("convex")(s)
    assert torch.allclose(s.g[0], torch.tensor([0.5, 0.25])) and torch.allclose(s.g[1], torch.tensor([1.25]))
    s = state(D, H2, gamma=0.25)
    Boost("additive")(s)
    assert torch.allclose(s.g[0], torch.tensor([0.75, 0.25])) and torch.allclose(s.g[1], torch.tensor([1.75]))


def test_projection_removes_the_conflicting_component():
    s = state(D, H2)
    Projection()(s)
    # D − (−3/3)·H2 = D + H2
    assert torch.allclose(s.g[0], torch.tensor([0.0, 1.0])) and torch.allclose(s.g[1], torch.tensor([1.0]))
    assert abs(sum(float((g * h).sum()) for g, h in zip(s.g, H2))) < 1e-6
    s = state(D, [-h for h in H2])   # no conflict: unchanged
    Projection()(s)
    assert torch.equal(s.g[0], D[0])


def test_clip_boosted_clips_the_mixed_gradient():
    s = state(D, H2, max_norm=1.0)
    ClipBoosted()(s)
    assert math.sqrt(sum(float((g ** 2).sum()) for g in s.g)) == pytest.approx(1.0, rel=1e-5)
    assert torch.allclose(s.g[0], D[0] / (math.sqrt(5) + 1e-6))
    s = state(D, H2)   # no clip norm reported: unchanged
    ClipBoosted()(s)
    assert torch.equal(s.g[0], D[0])


def test_l2sp_penalty():
    params = [torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.nn.Parameter(torch.tensor([3.0]))]
    origin = [torch.tensor([0.0, 1.0]), torch.tensor([4.0])]
    s = state(D, None, params=params)
    L2SP(0.5, origin)(s)
    assert torch.allclose(s.g[0], torch.tensor([1.5, 0.5])) and torch.allclose(s.g[1], torch.tensor([1.5]))


def test_ewc_adds_its_gradient_function():
    s = state(D, H2)
    EWC(lambda ps: [torch.ones_like(p) * 2 for p in ps])(s)
    assert torch.allclose(s.g[0], torch.tensor([3.0, 2.0])) and torch.allclose(s.g[1], torch.tensor([4.0]))


def test_fisher_matrix_keeps_row_and_column_sums():
    f = torch.rand(4, 3)
    fm = fisher_matrix(f.sum(1), f.sum(0))
    assert torch.allclose(fm.sum(1), f.sum(1)) and torch.allclose(fm.sum(0), f.sum(0))
    rank_one = torch.outer(torch.rand(4), torch.rand(3))
    assert torch.allclose(fisher_matrix(rank_one.sum(1), rank_one.sum(0)), rank_one, rtol=1e-5)


def test_step_scale_and_anneal():
    s = state(D, H2, rho=-1.0, t=5, total_steps=10)
    StepScale(CorrectionConfig())(s)
    assert s.lam == 2.0
    StepScale(CorrectionConfig(function="conservative"))(s)
    assert s.lam == 0.5
    Anneal(AnnealConfig(lr=0.1))(s)
    assert s.lr == pytest.approx(0.05)
    Anneal(AnnealConfig(lr=0.1, enabled=False))(s)
    assert s.lr == 0.1


def _adam_one_step(g):
    p = torch.nn.Parameter(torch.zeros_like(g))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.0)
    p.grad = g.clone()
    opt.step()
    return p, opt


def test_update_boost_preconditions_the_anchor_by_adams_sqrt_v():
    g = torch.tensor([0.5, -2.0, 1.0])
    p, opt = _adam_one_step(g)
    after_adam = p.detach().clone()
    h = torch.tensor([1.0, 1.0, -3.0])
    s = state([g], [h], params=[p], gamma=0.2, lr=0.1, lam=1.5)
    with torch.no_grad():
        UpdateBoost(eps=1e-8)(s, opt)
    vhat = (0.001 * g * g) / (1 - 0.999)
    u = h / (vhat.sqrt() + 1e-8)                      # [2, 0.5, −3]: two coordinates beyond a full Adam step
    assert torch.allclose(p.detach(), after_adam - 0.1 * 1.5 * 0.2 * u.clamp(-1, 1), rtol=1e-6)
    assert torch.allclose(p.detach() - after_adam, torch.tensor([-0.03, -0.015, 0.03]), atol=1e-7)


def test_update_boost_does_not_blow_up_where_the_domain_gradient_is_zero():
    g = torch.tensor([1.0, 0.0])                       # the second weight never sees a domain gradient: v̂ = 0
    p, opt = _adam_one_step(g)
    after_adam = p.detach().clone()
    s = state([g], [torch.tensor([0.0, 0.5])], params=[p], gamma=0.1, lr=0.1, lam=1.0)
    with torch.no_grad():
        UpdateBoost(eps=1e-8)(s, opt)
    # unclipped, 0.5/1e-8 would move it by 5e5; clipped, by one full step lr·λ·γ = 0.01
    assert torch.allclose(p.detach() - after_adam, torch.tensor([0.0, -0.01]), atol=1e-9)


def test_update_projection_on_a_conflicting_update():
    g = torch.tensor([1.0, 0.0])
    p, opt = _adam_one_step(g)            # u = m̂/(√v̂+ε) ≈ [1, 0]
    after_adam = p.detach().clone()
    h = torch.tensor([-1.0, 1.0])        # ⟨u, h⟩ < 0: conflict
    s = state([g], [h], params=[p], lr=0.1, lam=1.0)
    with torch.no_grad():
        UpdateProjection(eps=1e-8)(s, opt)
    u = torch.tensor([1.0, 0.0]) / (1.0 + 1e-8)
    c = float((u * h).sum())
    assert torch.allclose(p.detach(), after_adam + 0.1 * (c / 2.0) * h, rtol=1e-6)
    # the total step −0.1·ũ is orthogonal to h
    assert abs(float(((p.detach() - 0.0) * h).sum())) < 1e-6


def test_build_chain_orders_and_refuses_unknown_pieces():
    assert build_chain(DBAConfig(), has_anchor=True).names() == [
        "similarity", "boost-weight", "boost(convex)", "step-scale(paper)", "anneal(cosine)", "adamw"]
    direct = DBAConfig.direct(10)
    assert build_chain(direct, has_anchor=False).names() == ["boost-weight(off)", "step-scale(off)",
                                                              "anneal(cosine)", "adamw"]
    cfg = DBAConfig(boost=BoostConfig(mode="update", clip="anchor", scale="relative"))
    assert build_chain(cfg, has_anchor=True).names() == [
        "similarity", "rescale(relative)", "rescale(clip)", "boost-weight", "step-scale(paper)", "anneal(cosine)",
        "adamw", "update-boost"]
    with pytest.raises(DBAError, match="boost mode"):
        build_chain(DBAConfig(boost=BoostConfig(mode="sideways")), has_anchor=True)
    bad = DBAConfig()
    bad.penalty.kind = "l1"
    with pytest.raises(DBAError, match="penalty"):
        build_chain(bad, has_anchor=True)
