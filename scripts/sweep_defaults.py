"""The sweep that chose DBA Studio's default hyper-parameters for the embedded model (docs/defaults.md).

Runs `direct` and `dba` variants on one bundled domain with one shared global gradient, scores each run
(S_G on the general eval set, S_D on the domain eval set, S their harmonic mean) and prints a Markdown table.

    .venv/bin/python scripts/sweep_defaults.py --domain finance --grid lr --out runs/sweep-lr
    .venv/bin/python scripts/sweep_defaults.py --grid k0 --lr 1e-3 --out runs/sweep-k0

Grids (each a list of (label, method, overrides)): see GRIDS below. Every run uses the same seed, data order, steps
and batch size; only the named knobs change.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from dba import LoraSettings
from dba.data import batch_plan, bundled_path, collate, load_corpus
from dba.global_gradient import GlobalGradient, estimate_global_gradient
from dba.models import load_model
from dba.optim import AnnealConfig, BoostConfig, CorrectionConfig, DBAConfig
from dba.train import FinetuneConfig, finetune


def dba_cfg(lr, k0=None, k0_max=0.1, dc="paper", dc_on=True, boost_on=True, mode="convex", scale="raw",
            anneal_on=True):
    return DBAConfig(boost=BoostConfig(enabled=boost_on, k0=k0, k0_max=k0_max, mode=mode, scale=scale),
                     correction=CorrectionConfig(enabled=dc_on, function=dc),
                     anneal=AnnealConfig(lr=lr, enabled=anneal_on))


def grid(name: str, lr: float) -> list[tuple[str, str, dict]]:
    if name == "lr":
        out = []
        for x in (1e-4, 3e-4, 1e-3, 3e-3):
            out.append((f"direct lr={x:g}", "direct", {"dba": dba_cfg(x)}))
            out.append((f"dba lr={x:g}", "dba", {"dba": dba_cfg(x)}))
        return out
    if name == "k0":
        out = [("direct", "direct", {"dba": dba_cfg(lr)})]
        for k0 in (0.05, 0.1, 0.3, 0.5, 0.9):
            out.append((f"dba k0={k0:g}", "dba", {"dba": dba_cfg(lr, k0=k0)}))
        return out
    if name == "dc":
        return [("direct", "direct", {"dba": dba_cfg(lr)})] + [
            (f"dba dc={f}", "dba", {"dba": dba_cfg(lr, dc=f)}) for f in ("paper", "conservative", "off")]
    if name == "variants":
        return [
            ("direct", "direct", {"dba": dba_cfg(lr)}),
            ("dba", "dba", {"dba": dba_cfg(lr)}),
            ("dba relative", "dba", {"dba": dba_cfg(lr, scale="relative")}),
            ("dba projection", "dba", {"dba": dba_cfg(lr, mode="projection")}),
            ("mixture 0.3", "mixture", {"dba": dba_cfg(lr), "mixture_ratio": 0.3}),
        ]
    if name == "rank":
        out = []
        for r in (4, 8, 16, 32):
            for m in ("direct", "dba"):
                out.append((f"{m} r={r}", m, {"dba": dba_cfg(lr), "lora": LoraSettings(rank=r, alpha=2 * r)}))
        return out
    raise SystemExit(f"unknown grid {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", default="lr", choices=["lr", "k0", "dc", "variants", "rank"])
    ap.add_argument("--domain", default="finance")
    ap.add_argument("--model", default="default")
    ap.add_argument("--lr", type=float, default=1e-3, help="η_0 for grids other than lr")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lora-rank", type=int, default=16)
    ap.add_argument("--anchor-batches", type=int, default=16)
    ap.add_argument("--eval-items", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=None, help="comma-separated labels to run (subset of the grid)")
    ap.add_argument("--out", default="runs/sweep")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lora = LoraSettings(rank=args.lora_rank, alpha=2 * args.lora_rank)

    anchor_path = out / "anchor.safetensors"
    if anchor_path.exists():
        anchor = GlobalGradient.load(anchor_path)
    else:
        lm = load_model(args.model, lora=lora)
        general = load_corpus(bundled_path("general"), lm.tokenizer, 256)
        plan = batch_plan(len(general), args.batch_size, args.anchor_batches, args.seed + 7919)
        batches = (collate([general.examples[i] for i in idx], lm.tokenizer.pad_token_id) for idx in plan)
        anchor = estimate_global_gradient(lm.model, batches, base_model_id=args.model, corpus_name=general.name,
                                          corpus_hash=general.content_hash)
        anchor.save(anchor_path)
        del lm

    rows = []
    results_path = out / "results.csv"
    done = set()
    if results_path.exists():
        with open(results_path) as f:
            rows = list(csv.DictReader(f))
        done = {r["label"] for r in rows}
    only = set(args.only.split(",")) if args.only else None
    for label, method, over in grid(args.grid, args.lr):
        if label in done or (only and label not in only):
            continue
        kw = dict(method=method, model=args.model, lora=lora, domain=args.domain, steps=args.steps,
                  batch_size=args.batch_size, seed=args.seed, eval_items=args.eval_items,
                  output_dir=str(out / label.replace(" ", "_").replace("=", "")))
        kw.update(over)
        cfg = FinetuneConfig(**kw)
        t0 = time.time()
        r = finetune(cfg, anchor=anchor if method == "dba" else None, progress=False)
        evals = [m for m in r.metrics if m["type"] == "eval"]
        steps = [m for m in r.metrics if m["type"] == "step"]
        base, final = evals[0], evals[-1]
        rhos = [m["rho"] for m in steps]
        row = {"label": label, "method": method,
               "s_g": final["s_g"], "s_d": final["s_d"], "s": final["s"],
               "d_s_g": final["s_g"] - base["s_g"], "d_s_d": final["s_d"] - base["s_d"], "d_s": final["s"] - base["s"],
               "gen_g": final["detail"]["general"].get("gen"), "ll_g": final["detail"]["general"].get("loglik"),
               "gen_d": final["detail"]["domain"].get("gen"), "ll_d": final["detail"]["domain"].get("loglik"),
               "final_loss": steps[-1]["loss"], "rho_min": min(rhos), "rho_max": max(rhos),
               "lam_max": max(m["lam"] for m in steps), "seconds": round(time.time() - t0, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(results_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            w.writeheader()
            w.writerows(rows)
    base_s = None
    print(f"\n| run | S_G | S_D | S | ΔS_G | ΔS_D | ΔS | gen_G | final loss | ρ range | λ max |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f = lambda k: f"{float(r[k]):.3f}" if r.get(k) not in (None, "") else "–"
        print(f"| {r['label']} | {f('s_g')} | {f('s_d')} | {f('s')} | {float(r['d_s_g']):+.3f} | "
              f"{float(r['d_s_d']):+.3f} | {float(r['d_s']):+.3f} | {f('gen_g')} | {f('final_loss')} | "
              f"[{float(r['rho_min']):+.2f}, {float(r['rho_max']):+.2f}] | {f('lam_max')} |")


if __name__ == "__main__":
    main()
