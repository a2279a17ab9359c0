"""Exactness of DBA's math against autograd and hand computation (tiny models, fp32, CPU)."""
import math

import pytest
import torch

from dba import LoraSettings, load_model
from dba.errors import AnchorMismatchError, DBAError, TrainingError
from dba.global_gradient import (GlobalGradient, AnchorMismatchError as _AME, choose_rank, choose_ranks_total,
                                 compress, estimate_global_gradient, lora_layers, trainable_parameters)
from dba.optim import (AnchorMap, AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig, DBAOptimizer,
                       annealed_lr, boost, boost_weight, similarity, step_scale)

assert _AME is AnchorMismatchError


def rand_batches(n, seed=0, batch=2, length=12, vocab=500):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, length), generator=g)
        labels = ids.clone()
        labels[:, :3] = -100  # some positions without loss, as with chat masking
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def rel_err(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def tiny_full():
    return load_model("tiny", dtype="float32")


@pytest.fixture()
def tiny_lora():
    torch.manual_seed(0)
    return load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0))


# ---------------------------------------------------------------------------------------------------------- anchor


def test_param_space_anchor_is_mean_of_autograd_gradients(tiny_full):
    model = tiny_full.model
    batches = rand_batches(3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = estimate_global_gradient(model, batches, space="param", rank=None, energy=None, progress=False)
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before), "weights moved during zero-lr estimation"

    expected = {n: torch.zeros_like(p) for n, p in trainable_parameters(model).items()}
    model.eval()
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        for n, p in trainable_parameters(model).items():
            expected[n] += p.grad / len(batches)
    model.zero_grad(set_to_none=True)
    for n, e in expected.items():
        if e.norm() > 0:
            assert rel_err(g.matrix(n), e) < 1e-6, n
    assert g.meta["batches"] == 3 and g.meta["tokens"] == 3 * 2 * 12


def test_ema_estimator_is_bias_corrected_adam_first_moment(tiny_full):
    model = tiny_full.model
    batches = rand_batches(3, seed=4)
    beta = 0.8
    g = estimate_global_gradient(model, batches, space="param", estimator="ema", beta1=beta, rank=None, energy=None,
                                 progress=False)
    name = "model.layers.0.mlp.up_proj.weight"
    p = trainable_parameters(model)[name]
    m = torch.zeros_like(p)
    model.eval()
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        m = beta * m + (1 - beta) * p.grad
    model.zero_grad(set_to_none=True)
    assert rel_err(g.matrix(name), m / (1 - beta ** 3)) < 1e-6


def test_hook_captured_weight_gradient_equals_autograd(tiny_lora):
    model = tiny_lora.model
    # give B non-zero values so that the LoRA path also shapes the activations
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B["default"].weight.normal_(0, 0.05)
    batches = rand_batches(2, seed=1)
    g = estimate_global_gradient(model, batches, space="weight", rank=None, energy=None, progress=False)
    layers = lora_layers(model)
    for layer in layers.values():
        layer.base_layer.weight.requires_grad_(True)
    expected = {n: torch.zeros_like(l.base_layer.weight) for n, l in layers.items()}
    model.eval()
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        for n, l in layers.items():
            expected[n] += l.base_layer.weight.grad / len(batches)
    assert set(g.names()) == set(layers)
    for n, e in expected.items():
        assert rel_err(g.matrix(n), e) < 1e-5, n


def test_chain_rule_anchor_equals_autograd_of_linearised_loss(tiny_lora):
    model = tiny_lora.model
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B["default"].weight.normal_(0, 0.1)
    g = estimate_global_gradient(model, rand_batches(2, seed=2), space="weight", rank=3, energy=None, progress=False)
    params = list(trainable_parameters(model).values())
    mapped = AnchorMap(model, g, params)(params)

    # autograd of L_lin = Σ_l ⟨Ĝ_l, W_l + s·B_l·A_l⟩ with respect to every A and B
    lin = 0.0
    for name, layer in lora_layers(model).items():
        s = layer.scaling["default"]
        w_eff = layer.base_layer.weight + s * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        lin = lin + (g.matrix(name) * w_eff).sum()
    grads = torch.autograd.grad(lin, params)
    for got, want in zip(mapped, grads):
        assert rel_err(got, want) < 1e-5


def test_factored_products_equal_dense():
    torch.manual_seed(0)
    m = torch.randn(30, 20)
    us, v, s, _ = compress(m, rank=5)
    g = GlobalGradient(space="weight", factors={"w": (us, v)})
    x, y = torch.randn(20, 4), torch.randn(3, 30)
    dense = us @ v.T
    assert rel_err(g.times_right("w", x), dense @ x) < 1e-6
    assert rel_err(g.times_left("w", y), y @ dense) < 1e-6


def test_svd_truncation_error_is_the_discarded_energy():
    torch.manual_seed(1)
    m = torch.randn(40, 25, dtype=torch.float32)
    for k in (1, 5, 12):
        us, v, s, kept = compress(m, rank=k)
        err2 = float(((m - us @ v.T) ** 2).sum())
        discarded = float((s[k:].double() ** 2).sum())
        assert abs(err2 - discarded) / discarded < 1e-5
        assert abs(kept - float((s[:k].double() ** 2).sum() / (s.double() ** 2).sum())) < 1e-12


def test_energy_picks_the_smallest_rank_meeting_it():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert choose_rank(s, None, 16 / 22) == 1
    assert choose_rank(s, None, 16 / 22 + 1e-6) == 2
    assert choose_rank(s, None, 0.9) == 2    # 20/22 = 0.909
    assert choose_rank(s, None, 0.95) == 3   # 20/22 = 0.909 < 0.95 <= 21/22 = 0.955
    assert choose_rank(s, None, 1.0) == 4
    assert choose_rank(s, 2, 0.99) == 2  # explicit rank wins


def test_total_energy_ranks_by_hand():
    # a: 2x2 (4 floats per rank), σ² = 9, 1; b: 6x2 (8 floats per rank), σ² = 16, 4 -> total 30.
    # Energy per float, descending: a1 9/4, b1 16/8, b2 4/8, a2 1/4.
    spectra = {"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([4.0, 2.0])}
    shapes = {"a": (2, 2), "b": (6, 2)}
    assert choose_ranks_total(spectra, shapes, 9 / 30) == {"a": 1, "b": 1}       # a1 alone is enough; b keeps ≥ 1
    assert choose_ranks_total(spectra, shapes, 25 / 30) == {"a": 1, "b": 1}      # a1 + b1
    assert choose_ranks_total(spectra, shapes, 25 / 30 + 1e-9) == {"a": 1, "b": 2}
    assert choose_ranks_total(spectra, shapes, 1.0) == {"a": 2, "b": 2}


def test_total_energy_scope_keeps_the_total_in_fewer_floats(tiny_lora):
    dense = estimate_global_gradient(tiny_lora.model, rand_batches(3), energy=None, progress=False)
    per = estimate_global_gradient(tiny_lora.model, rand_batches(3), energy=0.9, progress=False)
    tot = estimate_global_gradient(tiny_lora.model, rand_batches(3), energy=0.9, energy_scope="total",
                                   progress=False)
    mats = [n for n in dense.names() if dense.matrix(n).dim() == 2]
    total = sum(float(dense.matrix(n).double().norm() ** 2) for n in mats)
    kept = sum(float(tot.matrix(n).double().norm() ** 2) for n in mats)  # ‖US Vᵀ‖² = energy of the kept prefix
    assert kept / total >= 0.9 - 1e-6
    assert tot.summary()["stored_mb"] < per.summary()["stored_mb"]
    assert tot.meta["energy_scope"] == "total"
    with pytest.raises(DBAError, match="streaming"):
        estimate_global_gradient(tiny_lora.model, rand_batches(1), rank=4, energy_scope="total", streaming=True,
                                 progress=False)


def test_save_load_round_trip_is_exact(tmp_path, tiny_lora):
    g = estimate_global_gradient(tiny_lora.model, rand_batches(2), energy=0.8, progress=False,
                                 corpus_name="unit", corpus_hash="abc")
    path = g.save(tmp_path / "anchor.safetensors")
    h = GlobalGradient.load(path, tiny_lora.model)
    assert h.space == g.space and h.names() == g.names() or set(h.names()) == set(g.names())
    for n in g.names():
        assert torch.equal(h.matrix(n), g.matrix(n))
        assert torch.equal(h.spectra[n], g.spectra[n])
    assert h.meta["corpus"] == "unit" and h.meta["weight_fingerprint"] == g.meta["weight_fingerprint"]
    assert h.energy_kept == pytest.approx(g.energy_kept)
    assert not list(tmp_path.glob(".*tmp")), "temp file left behind"


def test_load_against_another_model_names_what_differs(tmp_path, tiny_lora):
    from dba.models import tiny_checkpoint

    g = estimate_global_gradient(tiny_lora.model, rand_batches(1), energy=0.8, progress=False)
    path = g.save(tmp_path / "a.safetensors")
    other = load_model(str(tiny_checkpoint(seed=1)), lora=LoraSettings(rank=4))
    with pytest.raises(AnchorMismatchError, match="base weights differ"):
        GlobalGradient.load(path, other.model)
    narrower = load_model("tiny", lora=LoraSettings(rank=4, target_modules=["q_proj", "v_proj", "o_proj"]))
    GlobalGradient.load(path, narrower.model)  # a subset of the anchor's layers is fine
    wider = load_model(str(tiny_checkpoint(seed=0, hidden=32)), lora=LoraSettings(rank=4))
    with pytest.raises(AnchorMismatchError):
        GlobalGradient.load(path, wider.model)
    full = load_model("tiny")
    with pytest.raises(DBAError):  # weight space needs LoRA layers
        GlobalGradient.load(path, full.model)


# ---------------------------------------------------------------------------------------------------------- optimiser


class TwoParams(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(3, 4, generator=g))
        self.b = torch.nn.Parameter(torch.randn(4, generator=g))


def param_anchor(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    return GlobalGradient(space="param", dense={n: torch.randn(p.shape, generator=g)
                                                for n, p in model.named_parameters()})


def hand_adamw(p, grads_and_lrs, betas=(0.9, 0.999), eps=1e-8, wd=0.0):
    p = p.clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    for k, (g, lr) in enumerate(grads_and_lrs, start=1):
        p = p * (1 - lr * wd)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        mhat, vhat = m / (1 - betas[0] ** k), v / (1 - betas[1] ** k)
        p = p - lr * mhat / (vhat.sqrt() + eps)
    return p


def test_dba_steps_equal_hand_computed_adamw_on_the_boosted_gradient():
    model = TwoParams()
    anchor = param_anchor(model)
    cfg = DBAConfig(total_steps=10, weight_decay=0.01, boost=BoostConfig(k0=0.4),
                    anneal=AnnealConfig(lr=0.05))
    opt = DBAOptimizer(model, anchor, cfg)
    w0 = model.w.detach().clone()
    gen = torch.Generator().manual_seed(9)
    plan = []
    for t in range(3):
        gw, gb = torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen)
        model.w.grad, model.b.grad = gw.clone(), gb.clone()
        opt.step()
        # by hand
        hw, hb = anchor.dense["w"], anchor.dense["b"]
        cos = float((gw * hw).sum() + (gb * hb).sum()) / math.sqrt(
            float((gw ** 2).sum() + (gb ** 2).sum()) * float((hw ** 2).sum() + (hb ** 2).sum()))
        gamma = 0.4 * (1 - t / 10)
        lam = 1 + (1 - cos) / 2
        lr = 0.05 * 0.5 * (1 + math.cos(math.pi * t / 10))
        rec = opt.last_record
        assert rec["rho"] == pytest.approx(cos, rel=1e-6)
        assert rec["gamma"] == pytest.approx(gamma) and rec["lam"] == pytest.approx(lam)
        assert rec["lr"] == pytest.approx(lr) and rec["effective_lr"] == pytest.approx(lr * lam)
        plan.append((gamma * hw + (1 - gamma) * gw, lr * lam))
        assert torch.equal(model.w.grad, gw), "the user's gradient is restored after the step"
    expected = hand_adamw(w0, plan, wd=0.01)
    assert rel_err(model.w.detach(), expected) < 1e-6


def test_each_piece_off_reduces_to_plain_adamw():
    cfg = DBAConfig(total_steps=6, anneal=AnnealConfig(lr=0.01, enabled=False))
    cfg.boost.enabled = False
    cfg.correction.enabled = False
    a, b = TwoParams(), TwoParams()
    opt_a = DBAOptimizer(a, param_anchor(a), cfg)
    opt_b = torch.optim.AdamW(b.parameters(), lr=0.01, weight_decay=0.0)
    gen = torch.Generator().manual_seed(3)
    for _ in range(4):
        gw, gb = torch.randn(3, 4, generator=gen), torch.randn(4, generator=gen)
        for m in (a, b):
            m.w.grad, m.b.grad = gw.clone(), gb.clone()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a.w, b.w) and torch.equal(a.b, b.b)


@pytest.mark.parametrize("piece", ["boost", "correction", "anneal"])
def test_switching_one_piece_off_removes_exactly_its_effect(piece):
    cfg = DBAConfig(total_steps=8, boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=0.02))
    getattr(cfg, piece).enabled = False
    model = TwoParams()
    opt = DBAOptimizer(model, param_anchor(model), cfg)
    model.w.grad, model.b.grad = torch.ones(3, 4), torch.ones(4)
    for _ in range(3):
        opt.step()
    rec = opt.last_record
    if piece == "boost":
        assert rec["gamma"] == 0.0
    if piece == "correction":
        assert rec["lam"] == 1.0
    if piece == "anneal":
        assert rec["lr"] == 0.02


def test_schedules_hit_their_endpoints():
    T = 50
    b = BoostConfig()            # k0 = min(200/T, 0.1) = 0.1
    assert boost_weight(0, T, b) == pytest.approx(0.1) and boost_weight(T, T, b) == pytest.approx(0.0)
    assert boost_weight(0, 4000, b) == pytest.approx(0.05)  # long runs: the paper's 200/T
    assert boost_weight(T // 2, T, BoostConfig(decay="cosine", k0=0.5)) == pytest.approx(0.25)
    assert boost_weight(17, T, BoostConfig(decay="constant", k0=0.3)) == pytest.approx(0.3)
    a = AnnealConfig(lr=1e-3, min_lr_ratio=0.1)
    assert annealed_lr(0, T, a) == pytest.approx(1e-3) and annealed_lr(T, T, a) == pytest.approx(1e-4)
    assert annealed_lr(T, T, AnnealConfig(lr=1e-3, schedule="linear")) == pytest.approx(0.0)
    w = AnnealConfig(lr=1e-3, warmup_steps=4)
    assert annealed_lr(0, T, w) == pytest.approx(2.5e-4) and annealed_lr(4, T, w) == pytest.approx(1e-3)
    c = CorrectionConfig()
    assert step_scale(1.0, c) == 1.0 and step_scale(-1.0, c) == 2.0 and step_scale(0.0, c) == 1.5
    cons = CorrectionConfig(function="conservative")
    assert step_scale(1.0, cons) == 1.0 and step_scale(-1.0, cons) == 0.5
    assert step_scale(-1.0, CorrectionConfig(lam_max=1.3)) == 1.3
    assert step_scale(0.3, CorrectionConfig(function=lambda r: 7.0, lam_max=9)) == 7.0


def test_k0_above_one_is_an_error_not_a_silent_clamp():
    with pytest.raises(DBAError, match="outside"):
        boost_weight(0, 50, BoostConfig(k0_max=None))  # 200/50 = 4


def test_boost_modes_by_hand():
    d = [torch.tensor([1.0, 0.0])]
    h = [torch.tensor([-1.0, 1.0])]
    assert torch.allclose(boost(d, h, 0.25, "convex")[0], torch.tensor([0.5, 0.25]))
    assert torch.allclose(boost(d, h, 0.25, "additive")[0], torch.tensor([0.75, 0.25]))
    # projection removes the conflicting component: d - (<d,h>/|h|^2) h = [1,0] + 0.5*[-1,1] = [0.5, 0.5]
    assert torch.allclose(boost(d, h, 0.25, "projection")[0], torch.tensor([0.5, 0.5]))
    assert torch.equal(boost(d, [torch.tensor([1.0, 1.0])], 0.25, "projection")[0], d[0])  # no conflict: unchanged
    assert similarity(d, h) == pytest.approx(-1 / math.sqrt(2))
    assert similarity(d, h, "projection") == pytest.approx(-0.5)


def test_relative_scale_rescales_anchor_to_domain_norm():
    model = TwoParams()
    anchor = param_anchor(model)
    cfg = DBAConfig(total_steps=4, boost=BoostConfig(k0=0.5, scale="relative", decay="constant"),
                    anneal=AnnealConfig(lr=0.1, enabled=False))
    cfg.correction.enabled = False
    opt = DBAOptimizer(model, anchor, cfg)
    w0 = model.w.detach().clone()
    gw, gb = torch.randn(3, 4), 5 * torch.randn(4)
    model.w.grad, model.b.grad = gw.clone(), gb.clone()
    opt.step()
    hw, hb = anchor.dense["w"], anchor.dense["b"]
    ratio = math.sqrt(float((gw ** 2).sum() + (gb ** 2).sum()) / float((hw ** 2).sum() + (hb ** 2).sum()))
    assert opt.last_record["anchor_norm"] == pytest.approx(math.sqrt(float((hw ** 2).sum() + (hb ** 2).sum())))
    expected = hand_adamw(w0, [(0.5 * ratio * hw + 0.5 * gw, 0.1)])
    assert rel_err(model.w.detach(), expected) < 1e-6
    # the raw anchor gives a different step (so the test can fail)
    raw = hand_adamw(w0, [(0.5 * hw + 0.5 * gw, 0.1)])
    assert rel_err(raw, expected) > 1e-3


def test_nonfinite_gradients_are_skipped_then_stop_the_run():
    model = TwoParams()
    cfg = DBAConfig.direct(total_steps=10, lr=0.01, max_nonfinite_in_a_row=2)
    opt = DBAOptimizer(model, None, cfg)
    w0 = model.w.detach().clone()
    model.w.grad, model.b.grad = torch.full((3, 4), float("nan")), torch.zeros(4)
    opt.step()
    assert torch.equal(model.w, w0) and opt.last_record["skipped"] and opt.param_groups[0]["dba_skipped"] == 1
    with pytest.raises(TrainingError, match="2 steps in a row"):
        opt.step()


def test_state_dict_carries_the_schedule_position():
    model = TwoParams()
    opt = DBAOptimizer(model, None, DBAConfig.direct(total_steps=10, lr=0.01))
    model.w.grad, model.b.grad = torch.ones(3, 4), torch.ones(4)
    for _ in range(3):
        opt.step()
    sd = opt.state_dict()
    opt2 = DBAOptimizer(model, None, DBAConfig.direct(total_steps=10, lr=0.01))
    opt2.load_state_dict(sd)
    assert opt2.t == 3
