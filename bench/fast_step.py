"""A what-if for the library, measured by section (a) as the row ``dba (prototype)``: the same DBA step as
:class:`dba.optim.DBAOptimizer` with far fewer kernel launches and host synchronisations.

:meth:`DBAOptimizer.step` works tensor by tensor: a finiteness check with one host sync per tensor, five dot products
as Python sums over tensors (two kernels and a sync each), the anchor map as 3 kernels per LoRA matrix, the boost as 3
kernels per tensor. On a GPU with hundreds of LoRA tensors that is thousands of launches per step. This prototype:

- stacks the anchor factors of all layers of one shape once (ranks zero-padded, which changes no product) and maps
  the anchor with two batched matmuls per shape group (``torch.bmm``) instead of per layer;
- flattens g_D and ĝ once and gets ‖g_D‖², ‖ĝ‖², ⟨g_D, ĝ⟩ and the finiteness flag with ONE host sync;
- mixes with ``torch._foreach_*`` (one fused kernel per operation for all tensors).

The maths is DBAOptimizer's: same ρ, γ, λ, lr and AdamW update (only the summation order differs, ~1e-7 relative);
:func:`equivalence` checks it on the bench model. It exists to size what such a change would buy, not as the
library's optimiser; it keeps a stacked copy of the factors (double the anchor's memory).
"""
from __future__ import annotations

import math

import torch

from dba.errors import TrainingError
from dba.optim import DBAOptimizer, annealed_lr, boost, boost_weight, step_scale


class PrototypeFastDBA(DBAOptimizer):
    """DBAOptimizer with a batched anchor map and one host sync per step (see module docstring)."""

    def __init__(self, model, anchor, config, params=None):
        super().__init__(model, anchor, config, params)
        self.groups = None
        am = self.anchor_map
        if am is None or am.space != "weight" or any(
                role is not None and role[0] in anchor.dense and role[0] not in anchor.factors for role in am.roles):
            return  # param space or dense matrices: keep the library's map
        params = self._params()
        # group (layer, A-index, B-index) by (out, in) shape; pad every factor to the group's max rank
        layers: dict[str, dict] = {}
        for i, (p, role) in enumerate(zip(params, am.roles)):
            if role is None or role[0] not in anchor.factors:
                continue
            lname, which, layer, adapter = role
            entry = layers.setdefault(lname, {"layer": layer, "adapter": adapter})
            entry[which] = i
        by_shape: dict[tuple, list[str]] = {}
        for lname, e in layers.items():
            if "A" in e and "B" in e:
                us, v = anchor.factors[lname]
                by_shape.setdefault((us.shape[0], v.shape[0]), []).append(lname)
        self.groups = []
        for (m, n), names in by_shape.items():
            kmax = max(anchor.factors[nm][0].shape[1] for nm in names)
            dev = anchor.factors[names[0]][0].device
            us = torch.zeros(len(names), m, kmax, device=dev)
            v = torch.zeros(len(names), n, kmax, device=dev)
            for j, nm in enumerate(names):
                a, b = anchor.factors[nm]
                us[j, :, :a.shape[1]] = a
                v[j, :, :b.shape[1]] = b
            scale = torch.tensor([float(layers[nm]["layer"].scaling[layers[nm]["adapter"]]) for nm in names],
                                 device=dev).view(-1, 1, 1)
            self.groups.append({"us": us, "vt": v.transpose(1, 2).contiguous(), "scale": scale,
                                "a_idx": [layers[nm]["A"] for nm in names],
                                "b_idx": [layers[nm]["B"] for nm in names]})
        covered = {i for g in self.groups for i in g["a_idx"] + g["b_idx"]}
        self.uncovered = [i for i in range(len(params)) if i not in covered]

    @torch.no_grad()
    def _anchor(self, params) -> list[torch.Tensor]:
        if self.groups is None:
            return self.anchor_map(params)
        out: list[torch.Tensor | None] = [None] * len(params)
        for g in self.groups:
            a = torch.stack([params[i].float() for i in g["a_idx"]])        # L × r × in
            b = torch.stack([params[i].float() for i in g["b_idx"]])        # L × out × r
            gb = g["scale"] * torch.bmm(g["us"], torch.bmm(g["vt"], a.transpose(1, 2)))   # s·Ĝ·Aᵀ   L × out × r
            ga = g["scale"] * torch.bmm(torch.bmm(b.transpose(1, 2), g["us"]), g["vt"])   # s·Bᵀ·Ĝ   L × r × in
            for j, i in enumerate(g["a_idx"]):
                out[i] = ga[j].to(params[i].dtype)
            for j, i in enumerate(g["b_idx"]):
                out[i] = gb[j].to(params[i].dtype)
        for i in self.uncovered:
            out[i] = torch.zeros_like(params[i])
        return out

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
            self.pending_loss = float(loss)
        cfg, T = self.config, self.config.total_steps
        group0 = self.param_groups[0]
        t = group0["dba_t"]
        params = self._params()
        if not any(p.grad is not None for p in params):
            return loss
        g_d = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        g_hat = self._anchor(params) if self.anchor_map is not None else None

        flat_d = torch.cat([g.reshape(-1).float() for g in g_d])
        # mul + sum (torch's cascade summation), not BLAS dot: a fp32 dot over millions of terms loses ~1e-4 of ρ
        parts = [torch.isfinite(flat_d).all().float(), flat_d.square().sum()]
        if g_hat is not None:
            flat_h = torch.cat([h.reshape(-1).float() for h in g_hat])
            parts += [flat_h.square().sum(), (flat_d * flat_h).sum()]
        stats = torch.stack(parts).tolist()                                  # the step's one host sync
        if stats[0] < 1.0:
            group0["dba_skipped"] += 1
            group0["dba_nonfinite_in_a_row"] += 1
            group0["dba_t"] = t + 1
            self._emit({"step": t, "skipped": True, "loss": self.pending_loss,
                        "skipped_total": group0["dba_skipped"]})
            if group0["dba_nonfinite_in_a_row"] >= cfg.max_nonfinite_in_a_row:
                raise TrainingError(f"{group0['dba_nonfinite_in_a_row']} steps in a row had NaN/inf gradients "
                                    f"(step {t}); lower the learning rate or check the data / dtype.")
            return loss
        group0["dba_nonfinite_in_a_row"] = 0
        nd2 = stats[1]
        nh2, dh = (stats[2], stats[3]) if g_hat is not None else (0.0, 0.0)
        norm_d, norm_hat = math.sqrt(nd2), math.sqrt(nh2)
        if g_hat is None:
            rho = 0.0
        elif cfg.correction.similarity == "projection":
            rho = dh / nh2 if nh2 > 0 else 0.0
        else:
            rho = dh / math.sqrt(nd2 * nh2) if nd2 > 0 and nh2 > 0 else 0.0
        gamma = boost_weight(t, T, cfg.boost)
        if cfg.boost.enabled and g_hat is not None:
            if cfg.boost.scale == "relative" and norm_hat > 0:
                g_hat = torch._foreach_mul(g_hat, norm_d / norm_hat)
            if cfg.boost.mode == "convex":
                g_tilde = torch._foreach_add(torch._foreach_mul(g_hat, gamma), g_d, alpha=1.0 - gamma)
            elif cfg.boost.mode == "additive":
                g_tilde = torch._foreach_add(g_d, g_hat, alpha=gamma)
            else:
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
        return loss


def equivalence(model, anchor, config, batch) -> dict:
    """One step of DBAOptimizer and of the prototype from the same state and gradient: the largest relative
    difference of the updated adapter and of ρ, λ."""
    from dba.global_gradient import trainable_parameters

    params = trainable_parameters(model)
    start = {k: p.detach().clone() for k, p in params.items()}
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()  # one gradient, given to both (a second backward may differ in the last bits)
    grads = {k: p.grad.detach().clone() for k, p in params.items() if p.grad is not None}
    out = {}
    for name, cls in (("library", DBAOptimizer), ("prototype", PrototypeFastDBA)):
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(start[k])
                p.grad = grads[k].clone() if k in grads else None
        opt = cls(model, anchor, config)
        opt.step()
        out[name] = ({k: p.detach().clone() for k, p in params.items()}, opt.last_record)
        opt.zero_grad(set_to_none=True)
        del opt
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(start[k])
    (pa, ra), (pb, rb) = out["library"], out["prototype"]
    rel = [float((pa[k] - pb[k]).norm() / (pa[k] - start[k]).norm()) for k in pa if (pa[k] - start[k]).norm() > 0]
    return {"max_update_rel_diff": max(rel) if rel else 0.0, "rho": (ra["rho"], rb["rho"]),
            "lam": (ra["lam"], rb["lam"])}
