"""``dba eval``: score a base model, a LoRA adapter or a finished run on multiple-choice eval files
(:mod:`dba.scores_cli` does the scoring, :func:`dba.runs.load_trained` the loading)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..config import FinetuneConfig, LoraSettings
from ..errors import DBAError
from ..runs import is_adapter_folder, is_run_folder, load_trained
from ..scores_cli import evaluate_sets, format_table, resolve_eval_sets


def cmd_eval(args) -> int:
    from ..data import load_mc
    from ..models import load_model

    if args.run and args.adapter:
        raise DBAError("Give either --run or --adapter, not both.")
    if args.max_items is not None and args.max_items < 0:
        raise DBAError(f"--eval-items must be 0 (all items) or a positive number, got {args.max_items}.")
    sets = resolve_eval_sets(args.eval, args.domain, args.general)
    # Read every file before loading a model: a typo fails in a second, not after the load.
    items = {s.path: load_mc(s.path) for s in sets}
    target = args.run or args.adapter
    if args.run and not is_run_folder(args.run):
        p = Path(args.run)
        why = "does not exist" if not p.exists() else "has no config.json from dba train"
        raise DBAError(f"{args.run} is not a run folder: it {why}.")
    if args.adapter and not is_adapter_folder(args.adapter):
        raise DBAError(f"{args.adapter} is not a PEFT adapter folder (no adapter_config.json).")
    if target:
        lm = load_trained(target, model=args.model, quantization=args.quantization, device=args.device,
                          trust_remote_code=args.trust_remote_code)
    else:
        lm = load_model(args.model or "default", quantization=args.quantization or "none", lora=None,
                        device=args.device, trust_remote_code=args.trust_remote_code) \
            if (args.quantization or "none") == "none" else _load_quantised_base(args)
    result = evaluate_sets(lm.model, lm.tokenizer, sets, scorer=args.scorer,
                           max_items=args.max_items or None,  # 0 = all
                           batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, items=items)
    result["model"] = {"model": lm.name, "quantization": lm.quantization, "adapter": lm.extra.get("adapter"),
                       "run": str(args.run) if args.run else None, "device": str(lm.device)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        what = f"run {args.run}" if args.run else f"adapter {args.adapter}" if args.adapter else "base model"
        print(f"{what} on {lm.name} ({lm.quantization}, {lm.device})")
        print(format_table(result))
    sys.stdout.flush()
    return 0


def _load_quantised_base(args):
    """A quantised base model for scoring: load_model needs LoRA with quantisation, and a fresh LoRA adapter
    (B = 0) leaves the model's outputs exactly those of the base."""
    from ..models import load_model

    return load_model(args.model or "default", quantization=args.quantization, lora=LoraSettings(rank=1, alpha=1),
                      device=args.device, trust_remote_code=args.trust_remote_code)


def add_command(sub) -> None:
    """Register ``dba eval`` on the CLI's subparsers."""
    p = sub.add_parser("eval", help="score a base model, an adapter or a run folder on MC eval files",
                       description="Multiple-choice evaluation: per file, log-likelihood accuracy (summed and "
                                   "length-normalised), greedy-generation accuracy and the combined score with its "
                                   "95 %% interval (item bootstrap); S_G, S_D and S with intervals for --general "
                                   "with --domain.")
    w = p.add_argument_group("what to score (default: the base model)")
    w.add_argument("--model", default=None,
                   help="base model: 'default', 'tiny', a hub id, a folder or a .gguf (default: the run's model, "
                        "else 'default')")
    w.add_argument("--adapter", default=None, metavar="DIR", help="a PEFT LoRA adapter folder, on top of --model")
    w.add_argument("--run", default=None, metavar="DIR", help="a run folder from dba train / dba compare")
    w.add_argument("--quantization", choices=["none", "4bit", "8bit"], default=None,
                   help="load the base quantised (default: as the run was trained, else none)")
    w.add_argument("--device", default="auto")
    w.add_argument("--trust-remote-code", action="store_true")
    d = p.add_argument_group("eval sets (any number, at least one)")
    d.add_argument("--eval", action="append", default=[], metavar="FILE",
                   help='a multiple-choice .jsonl file ({"question", "choices", "answer"} per line); repeatable')
    d.add_argument("--domain", action="append", default=[], metavar="NAME",
                   help="a bundled domain eval set (finance, medicine, law, news_qa); repeatable")
    d.add_argument("--general", action="store_true", help="the bundled general eval set")
    o = p.add_argument_group("scoring")
    o.add_argument("--scorer", choices=["mean", "loglik", "gen"], default=FinetuneConfig().eval_scorer,
                   help="how each set's score combines log-likelihood and generation accuracy")
    o.add_argument("--eval-items", "--max-items", dest="max_items", type=int, default=None, metavar="N",
                   help="score only the first N items of each file; 0 = all items (default: all)")
    o.add_argument("--batch-size", type=int, default=16)
    o.add_argument("--max-new-tokens", type=int, default=32, help="reply length for the generation scorer")
    o.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_eval)

