"""The sweep that chose DBA Studio's default hyper-parameters for the embedded model (see docs/defaults.md).

Runs `direct`, `mixture` and `dba` variants on one bundled domain with ONE shared global gradient, scores the base
model once and every run once at its end — per item, so S_G / S_D can be recomputed on any subset of the eval sets —
and prints a Markdown table.

    .venv/bin/python scripts/sweep_defaults.py --plan lr --out runs/sweep-lr          # direct vs dba over η_0
    .venv/bin/python scripts/sweep_defaults.py --plan full --out runs/sweep-full      # everything in docs/defaults.md

Every run uses the same seed, data order, steps and batch size; only the named knobs change.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from dba.anchor import estimate_from_corpus
from dba.config import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig, LoraSettings, preset
from dba.data import bundled_path, load_mc
from dba.global_gradient import GlobalGradient
from dba.models import load_model
from dba.scores import combine, harmonic_mean, score_generation, score_mc_loglik
from dba.train import finetune

BASE = preset("full").run
"""Every run starts from the ``full`` preset (dba.config); the options below change it."""


def dba_cfg(lr, k0=None, k0_max=BoostConfig().k0_max, dc="paper", dc_on=True, boost_on=True, mode="convex", scale="raw",
            anneal_on=True):
    return DBAConfig(boost=BoostConfig(enabled=boost_on, k0=k0, k0_max=k0_max, mode=mode, scale=scale),
                     correction=CorrectionConfig(enabled=dc_on, function=dc),
                     anneal=AnnealConfig(lr=lr, enabled=anneal_on))


def plan(name: str, lrs: list[float]) -> list[tuple[str, str, dict]]:
    """(label, method, FinetuneConfig overrides) for each run of a plan."""
    runs: list[tuple[str, str, dict]] = []
    if name in ("lr", "full"):
        for lr in lrs:
            runs.append((f"direct lr={lr:g}", "direct", {"dba": dba_cfg(lr)}))
            runs.append((f"dba lr={lr:g}", "dba", {"dba": dba_cfg(lr)}))
    if name in ("k0", "full"):
        for lr in lrs[-2:]:
            for k0 in (0.05, 0.3, 0.5, 0.9):
                runs.append((f"dba lr={lr:g} k0={k0:g}", "dba", {"dba": dba_cfg(lr, k0=k0)}))
    if name in ("variants", "full"):
        for lr in lrs[-2:]:
            runs += [
                (f"dba lr={lr:g} dc=conservative", "dba", {"dba": dba_cfg(lr, dc="conservative")}),
                (f"dba lr={lr:g} dc=off", "dba", {"dba": dba_cfg(lr, dc_on=False)}),
                (f"dba lr={lr:g} relative k0=0.5", "dba", {"dba": dba_cfg(lr, k0=0.5, scale="relative")}),
                (f"dba lr={lr:g} projection", "dba", {"dba": dba_cfg(lr, mode="projection")}),
                (f"mixture lr={lr:g} r=0.3", "mixture", {"dba": dba_cfg(lr), "mixture_ratio": 0.3}),
            ]
    if not runs:
        raise SystemExit(f"unknown plan {name}")
    return runs


def score_items(model, tok, items, batch_size=32) -> dict:
    """Per-item correctness under both scorers, keyed by item id (so any subset can be re-scored)."""
    ll = score_mc_loglik(model, tok, items, batch_size=batch_size)
    gen = score_generation(model, tok, items, batch_size=batch_size)
    return {(it.id or str(i)): {"ll": int(ll.predictions[i] == it.answer), "gen": int(gen.correct[i]),
                                "reply": gen.replies[i][:80]}
            for i, it in enumerate(items)}


def summarise(per_item: dict, ids: list[str] | None = None) -> dict:
    ids = ids or list(per_item)
    ll = sum(per_item[i]["ll"] for i in ids) / len(ids)
    gen = sum(per_item[i]["gen"] for i in ids) / len(ids)
    return {"loglik": ll, "gen": gen, "score": combine(ll, gen, "mean")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default="lr", choices=["lr", "k0", "variants", "full"])
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3,3e-3", help="η_0 values (k0/variants use the last two)")
    ap.add_argument("--domain", default="finance")
    ap.add_argument("--model", default=BASE.model)
    ap.add_argument("--steps", type=int, default=BASE.steps)
    ap.add_argument("--batch-size", type=int, default=BASE.batch_size)
    ap.add_argument("--max-length", type=int, default=BASE.max_length)
    ap.add_argument("--lora-rank", type=int, default=BASE.lora.rank, help="α = 2 × rank")
    ap.add_argument("--anchor-batches", type=int, default=32,
                    help="the sweep of docs/defaults.md averaged 32 general batches (a run's default is "
                         f"{BASE.anchor_batches})")
    ap.add_argument("--seed", type=int, default=BASE.seed)
    ap.add_argument("--general-eval", default=None, help="general MC eval file (default: bundled)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", help="float32 everywhere, so GPU and CPU runs agree")
    ap.add_argument("--max-items", type=int, default=None, help="first N items of each eval set (smoke tests)")
    ap.add_argument("--out", default="runs/sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = BASE.replace(model=args.model, lora=LoraSettings(rank=args.lora_rank), domain=args.domain,
                       steps=args.steps, batch_size=args.batch_size, seed=args.seed, max_length=args.max_length,
                       anchor_batches=args.anchor_batches, evaluate_at_end=False, device=args.device,
                       dtype=args.dtype)
    gen_items = load_mc(args.general_eval or bundled_path("general", "eval"))
    dom_items = load_mc(bundled_path(args.domain, "eval"))
    if args.max_items:
        gen_items, dom_items = gen_items[:args.max_items], dom_items[:args.max_items]

    lm = load_model(run.model, lora=run.lora, device=run.device, dtype=run.dtype)
    anchor_path = out / "anchor.safetensors"
    if anchor_path.exists():
        anchor = GlobalGradient.load(anchor_path, lm.model)
    else:
        anchor = estimate_from_corpus(lm, run.anchor_config(), progress=False)
        anchor.save(anchor_path)
    print("anchor", json.dumps(anchor.summary()), flush=True)
    base = {"general": score_items(lm.model, lm.tokenizer, gen_items),
            "domain": score_items(lm.model, lm.tokenizer, dom_items)}
    del lm
    per_item = {"base": base}

    rows = []
    for label, method, over in plan(args.plan, [float(x) for x in args.lrs.split(",")]):
        cfg = run.replace(method=method, output_dir=str(out / label.replace(" ", "_").replace("=", "")), **over)
        t0 = time.time()
        r = finetune(cfg.resolved(), anchor=anchor if method == "dba" else None, progress=False, keep_model=True)
        m, tok = r.loaded.model, r.loaded.tokenizer
        res = {"general": score_items(m, tok, gen_items), "domain": score_items(m, tok, dom_items)}
        per_item[label] = res
        steps = [x for x in r.metrics if x["type"] == "step"]
        g, d = summarise(res["general"]), summarise(res["domain"])
        bg, bd = summarise(base["general"]), summarise(base["domain"])
        row = {"label": label, "method": method, "s_g": g["score"], "s_d": d["score"],
               "s": harmonic_mean(g["score"], d["score"]),
               "d_s_g": g["score"] - bg["score"], "d_s_d": d["score"] - bd["score"],
               "gen_g": g["gen"], "ll_g": g["loglik"], "gen_d": d["gen"], "ll_d": d["loglik"],
               "final_loss": steps[-1]["loss"], "rho_min": min(x["rho"] for x in steps),
               "rho_max": max(x["rho"] for x in steps), "lam_max": max(x["lam"] for x in steps),
               "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del r, m
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        with open(out / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(rows)
        (out / "per_item.json").write_text(json.dumps(per_item))

    bg, bd = summarise(base["general"]), summarise(base["domain"])
    print(f"\nbase: S_G {bg['score']:.3f} (loglik {bg['loglik']:.3f}, gen {bg['gen']:.3f}), "
          f"S_D {bd['score']:.3f} (loglik {bd['loglik']:.3f}, gen {bd['gen']:.3f}), "
          f"S {harmonic_mean(bg['score'], bd['score']):.3f}")
    print("\n| run | S_G | S_D | S | ΔS_G | ΔS_D | gen_G | final loss | ρ range | λ max |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['s_g']:.3f} | {r['s_d']:.3f} | {r['s']:.3f} | {r['d_s_g']:+.3f} | "
              f"{r['d_s_d']:+.3f} | {r['gen_g']:.3f} | {r['final_loss']:.3f} | "
              f"[{r['rho_min']:+.2f}, {r['rho_max']:+.2f}] | {r['lam_max']:.2f} |")


if __name__ == "__main__":
    main()
