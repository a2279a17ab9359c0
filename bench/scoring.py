"""Scoring speed: ``dba.scores`` against the floor (a plain batched forward pass over the same tokens), and the
seconds a whole evaluation takes.

    .venv/bin/python -m bench.scoring                      # embedded default, 2 threads, 400+100 and 100+40 items
    .venv/bin/python -m bench.scoring --threads 1 --large 0   # only the lesson's set
    .venv/bin/python -m bench.scoring --help

What is measured (fp32, eval mode, no gradients; each timing once, after one warm-up scoring of a few items):

- **log-likelihood** (``score_mc_loglik``): the *work* of an item is its prompt once plus each choice once. The
  floor runs exactly those tokens as one plain sequence per item (prompt + choice 1 + choice 2 + ...), batched and
  right-padded like the scorer (same batch size), with no KV cache and the output head on the last position only:
  the cheapest forward that reads every token of the item. ``throughput vs floor`` = floor seconds / scorer seconds
  (both over the same items, so it is the ratio of tokens per second). Also the plain scorer (``fast=False``: every
  prompt + choice as its own right-padded sequence) for reference.
- **generation** (``score_generation``, greedy, ≤ ``--max-new-tokens``): the floor is one batched forward over each
  item's prompt followed by the reply it generated (the same tokens, but all at once instead of token by token).
- **evaluation** (``dba.scores.evaluate``, scorer "mean": log-lik + generation + intervals) on a general and a domain
  set: the lesson's evaluation set (``--lesson``, 100 general + 40 domain items) and a large one (``--large``, 400 +
  100). The bundled sets are used; when one holds fewer items than asked, its items are repeated (the table says so).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch


def _items(name: str, n: int):
    from dba.data import bundled_path, load_mc

    base = load_mc(bundled_path(name, "eval"))
    reps = -(-n // len(base)) if n else 1
    return (base * reps)[:n] if n else base, len(base)


CPU_SECONDS: dict[str, float] = {}
"""Process CPU seconds (all threads) of each timed phase, by label: on a machine shared with other jobs the wall
clock stretches, the CPU time much less; CPU seconds / threads estimates the wall time on idle cores."""


def _t(fn, label: str):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    CPU_SECONDS[label] = time.process_time() - c
    return time.perf_counter() - t, out


@torch.no_grad()
def _floor(model, seqs: list[list[int]], batch_size: int, pad: int, label: str) -> float:
    """Seconds of plain batched forwards (right-padded, no cache, output head on the last position) over ``seqs``,
    longest first like the scorers."""
    keep = {"logits_to_keep": 1}
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    t, c = time.perf_counter(), time.process_time()
    for s in range(0, len(order), batch_size):
        rows = [seqs[i] for i in order[s:s + batch_size]]
        L = max(len(r) for r in rows)
        ids = torch.full((len(rows), L), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        for k, r in enumerate(rows):
            ids[k, :len(r)] = torch.tensor(r)
            mask[k, :len(r)] = 1
        model(input_ids=ids, attention_mask=mask, use_cache=False, **keep)
    CPU_SECONDS[label] = time.process_time() - c
    return time.perf_counter() - t


def run(args) -> dict:
    from dba import load_model
    from dba import scores as sc

    torch.set_num_threads(args.threads)
    t_load, lm = _t(lambda: load_model(args.model, device="cpu"), "load")
    model, tok = lm.model, lm.tokenizer
    model.eval()
    pad = sc._pad_id(tok)
    bs = args.batch_size
    res: dict = {"model": lm.name, "domain": args.domain, "threads": args.threads, "batch_size": bs,
                 "gen_batch_size": args.gen_batch_size, "max_new_tokens": args.max_new_tokens,
                 "load_seconds": round(t_load, 1), "torch": torch.__version__, "python": platform.python_version(),
                 "loadavg_before": os.getloadavg()}
    # warm-up: allocator, thread pools, the tokenizer's chat template
    warm, _ = _items("general", 4)
    sc.evaluate(model, tok, warm, warm, batch_size=bs, max_new_tokens=4)
    res["cpu_seconds"] = CPU_SECONDS

    if args.throughput_items > 0:
        _throughput(res, args, model, tok, pad, bs)
    _evaluations(res, args, model, tok, bs)
    res["loadavg_after"] = os.getloadavg()
    return res


def _throughput(res, args, model, tok, pad, bs) -> None:
    """Log-likelihood, generation and NLL against their floors, on ``--throughput-items`` items."""
    from dba import scores as sc

    # ---- log-likelihood and generation vs the floor, on the throughput set ------------------------------------------
    items, have = _items(args.domain if args.throughput_set == "domain" else "general", args.throughput_items)
    res["throughput_set"] = {"name": args.throughput_set, "items": len(items), "distinct": have}
    prompts = [sc._prompt_ids(tok, it.question) for it in items]
    choices = [[sc._choice_ids(tok, c) for c in it.choices] for it in items]
    work = [p + [t for c in cs for t in c] for p, cs in zip(prompts, choices)]
    n_tok = sum(len(w) for w in work)
    t_floor = _floor(model, work, bs, pad, "ll_floor")
    t_fast, ll = _t(lambda: sc.score_mc_loglik(model, tok, items, batch_size=bs), "ll_fast")
    t_plain, ll_plain = _t(lambda: sc.score_mc_loglik(model, tok, items, batch_size=bs, fast=False), "ll_plain")
    res["loglik"] = {"tokens": n_tok, "floor_s": t_floor, "fast_s": t_fast, "plain_s": t_plain,
                     "fast_vs_floor": t_floor / t_fast, "plain_vs_floor": t_floor / t_plain,
                     "fast_vs_floor_cpu": CPU_SECONDS["ll_floor"] / CPU_SECONDS["ll_fast"],
                     "same_predictions": ll.predictions == ll_plain.predictions,
                     "max_logprob_diff": max(abs(a - b) for x, y in zip(ll.logprobs, ll_plain.logprobs)
                                             for a, b in zip(x, y))}

    stops = sc.stop_token_ids(model, tok)
    t_gen, gen = _t(lambda: sc.score_generation(model, tok, items, batch_size=args.gen_batch_size,
                                                    max_new_tokens=args.max_new_tokens), "gen_fast")
    replies = [tok(r, add_special_tokens=False).input_ids for r in gen.replies]
    gwork = [p + r + [next(iter(stops))] for p, r in zip(prompts, replies)]  # + the token that ended the reply
    t_gfloor = _floor(model, gwork, bs, pad, "gen_floor")
    res["generation"] = {"tokens": sum(len(w) for w in gwork), "reply_tokens": sum(len(r) + 1 for r in replies),
                         "floor_s": t_gfloor, "fast_s": t_gen, "fast_vs_floor": t_gfloor / t_gen,
                         "fast_vs_floor_cpu": CPU_SECONDS["gen_floor"] / CPU_SECONDS["gen_fast"]}
    if args.plain_generation:
        t_gplain, gplain = _t(lambda: sc.score_generation(model, tok, items, batch_size=args.gen_batch_size,
                                                          max_new_tokens=args.max_new_tokens, fast=False),
                                    "gen_plain")
        res["generation"].update(plain_s=t_gplain, plain_vs_floor=t_gfloor / t_gplain,
                                 same_replies=gplain.replies == gen.replies)

    # ---- held-out answer NLL (bundled pairs) vs the floor ---------------------------------------------------------
    try:
        pairs = (sc.load_qa_pairs(sc.heldout_pairs_path("general"))
                 + sc.load_qa_pairs(sc.heldout_pairs_path(args.domain)))
    except Exception as e:  # noqa: BLE001 -- older data without held-out pairs: skip the row
        res["nll"] = {"skipped": str(e)}
    else:
        nwork = [sc._pair_prompt_ids(tok, q) + sc._choice_ids(tok, q.answer) for q in pairs]
        t_nfloor = _floor(model, nwork, bs, pad, "nll_floor")
        t_nll, r = _t(lambda: sc.score_nll(model, tok, pairs, batch_size=bs), "nll_fast")
        res["nll"] = {"pairs": len(pairs), "tokens": sum(len(w) for w in nwork), "floor_s": t_nfloor, "fast_s": t_nll,
                      "fast_vs_floor": t_nfloor / t_nll, "nll": r.nll,
                      "fast_vs_floor_cpu": CPU_SECONDS["nll_floor"] / CPU_SECONDS["nll_fast"]}



def _evaluations(res, args, model, tok, bs) -> None:
    """``dba.scores.evaluate`` (log-lik + generation + intervals) on the lesson's and the large set."""
    from dba import scores as sc

    res["evaluations"] = []
    for label, (ng, nd) in (("lesson", args.lesson), ("large", args.large)):
        if ng + nd == 0:
            continue
        g, g_have = _items("general", ng)
        d, d_have = _items(args.domain, nd)
        t_eval, s = _t(lambda: sc.evaluate(model, tok, g or None, d or None, batch_size=bs,
                                           max_new_tokens=args.max_new_tokens, gen_batch_size=args.gen_batch_size),
                       label)
        res["evaluations"].append({"set": label, "general": ng, "general_distinct": g_have, "domain": args.domain,
                                   "domain_items": nd, "domain_distinct": d_have, "seconds": t_eval,
                                   "cpu_seconds": CPU_SECONDS[label],
                                   "s_g": s.s_g, "s_d": s.s_d, "s": s.s, "ci": s.ci})


def report(res: dict) -> str:
    head = [f"#### Scoring speed — {res['model']}, {res['threads']} thread(s), batch {res['batch_size']} items "
            f"(generation {res['gen_batch_size']} rows), fp32 CPU, torch {res['torch']}", "",
            f"Load average before / after: {' '.join(f'{x:.1f}' for x in res['loadavg_before'])} / "
            f"{' '.join(f'{x:.1f}' for x in res['loadavg_after'])}.", ""]
    return "\n".join(head + (_report_throughput(res) if "loglik" in res else []) + _report_evaluations(res))


def _report_throughput(res: dict) -> list[str]:
    ll, gen, nll = res["loglik"], res["generation"], res["nll"]
    ts = res["throughput_set"]
    rep = f" ({ts['distinct']} distinct, repeated)" if ts["items"] > ts["distinct"] else ""
    return [
        f"Throughput set: {ts['items']} {ts['name']} items{rep}.", "",
        "| scorer | tokens | floor s | scorer s | throughput vs floor (wall) | (CPU time) | plain scorer s "
        "| plain vs floor |",
        "|---|---|---|---|---|---|---|---|",
        f"| log-likelihood | {ll['tokens']} | {ll['floor_s']:.1f} | {ll['fast_s']:.1f} | "
        f"{100 * ll['fast_vs_floor']:.0f} % | {100 * ll['fast_vs_floor_cpu']:.0f} % | {ll['plain_s']:.1f} | "
        f"{100 * ll['plain_vs_floor']:.0f} % |",
        f"| generation (≤ {res['max_new_tokens']} new tokens) | {gen['tokens']} | {gen['floor_s']:.1f} | "
        f"{gen['fast_s']:.1f} | {100 * gen['fast_vs_floor']:.0f} % | {100 * gen['fast_vs_floor_cpu']:.0f} % | "
        + (f"{gen['plain_s']:.1f} | {100 * gen['plain_vs_floor']:.0f} % |" if "plain_s" in gen else "- | - |"),
        (f"| held-out answer NLL ({nll['pairs']} pairs: general + {res['domain']}) | {nll['tokens']} | "
         f"{nll['floor_s']:.1f} | {nll['fast_s']:.1f} | {100 * nll['fast_vs_floor']:.0f} % | "
         f"{100 * nll['fast_vs_floor_cpu']:.0f} % | - | - |"
         if "pairs" in nll else f"| held-out answer NLL | skipped: {nll['skipped']} | | | | | | |"),
        "", f"Log-lik fast vs plain: same predictions {ll['same_predictions']}, largest log-prob difference "
            f"{ll['max_logprob_diff']:.1e}"
        + (f"; generation fast vs plain: same replies {gen['same_replies']}." if "same_replies" in gen else "."), ""]


def _report_evaluations(res: dict) -> list[str]:
    lines = ["| evaluation | general items | domain items | seconds (wall) | CPU seconds / threads | S_G | S_D | S |",
             "|---|---|---|---|---|---|---|---|"]
    for e in res["evaluations"]:
        def n(k, have):
            return f"{e[k]}" + (f" ({e[have]} distinct, repeated)" if e[k] > e[have] else "")

        def ci(k):
            v, c = e[k], e["ci"].get(k)
            return "-" if v is None else f"{v:.3f} [{c[0]:.3f}, {c[1]:.3f}]" if c else f"{v:.3f}"

        lines.append(f"| {e['set']} | {n('general', 'general_distinct')} | {e['domain']}: "
                     f"{n('domain_items', 'domain_distinct')} | {e['seconds']:.1f} | "
                     f"{e['cpu_seconds'] / res['threads']:.1f} | {ci('s_g')} | {ci('s_d')} | {ci('s')} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scoring", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2 CPU cores)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--gen-batch-size", type=int, default=64, help="rows of the batched greedy generation")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--domain", default="finance", help="bundled domain of the evaluations")
    p.add_argument("--throughput-set", choices=["general", "domain"], default="general")
    p.add_argument("--throughput-items", type=int, default=100, help="items of the floor comparison (0 skips it)")
    p.add_argument("--plain-generation", action="store_true", help="also time model.generate (slow)")
    p.add_argument("--lesson", type=lambda s: tuple(int(x) for x in s.split(",")), default=(100, 40),
                   metavar="G,D", help="the lesson's evaluation set: general,domain items (default 100,40)")
    p.add_argument("--large", type=lambda s: tuple(int(x) for x in s.split(",")), default=(400, 100),
                   metavar="G,D", help="the large evaluation set (default 400,100; 0,0 skips it)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args(argv)
    if args.large == (0,):
        args.large = (0, 0)
    res = run(args)
    print(report(res))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(res, f, indent=2)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
