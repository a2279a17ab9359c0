"""``dba eval``: score a base model, a LoRA adapter or a finished run on multiple-choice eval files.

Also home of :func:`load_trained` (a run folder or an adapter folder -> a model ready to score) and
:func:`evaluate_sets` (the per-file table ``dba eval`` prints), so the app and notebooks use the same code.

Each eval file is in the bundled multiple-choice format, one ``{"question", "choices", "answer"}`` object per line
(``dba.data.load_mc``). Per file the table shows: n, log-likelihood accuracy, length-normalised log-likelihood
accuracy, generation accuracy and the combined score (``dba.scores.combine`` with the chosen scorer). When a general
set and domain sets are scored together, S = harmonic mean of S_G and each S_D is shown too.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import DBAError, ModelLoadError

# --------------------------------------------------------------------------------------------------------------------
# Loading what a run produced


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DBAError(f"Cannot read {what} {path}: {e}") from None
    if not isinstance(obj, dict):
        raise DBAError(f"{path} is not a JSON object ({what}).")
    return obj


def is_run_folder(path: str | Path) -> bool:
    """A folder written by ``dba.train.finetune`` (its config.json names a fine-tuning method)."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return "method" in json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def is_adapter_folder(path: str | Path) -> bool:
    """A PEFT adapter folder (``save_pretrained`` output: adapter_config.json + weights)."""
    return (Path(path) / "adapter_config.json").is_file()


# Adapter features the project's LoRA loading does not reproduce: loading such an adapter as plain LoRA would give a
# different model silently, so it is refused.
_UNSUPPORTED_ADAPTER_KEYS = {"use_dora": "DoRA", "use_rslora": "rank-stabilised LoRA",
                             "rank_pattern": "per-layer ranks", "alpha_pattern": "per-layer alphas",
                             "modules_to_save": "extra trained modules"}


def adapter_lora_settings(adapter_dir: str | Path):
    """The :class:`dba.models.LoraSettings` an adapter folder was trained with (from its adapter_config.json)."""
    from .models import LoraSettings

    adapter_dir = Path(adapter_dir)
    cfg = _read_json(adapter_dir / "adapter_config.json", "adapter config")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ModelLoadError(f"{adapter_dir} is a {cfg.get('peft_type')} adapter; only LoRA adapters can be scored.")
    used = [name for key, name in _UNSUPPORTED_ADAPTER_KEYS.items() if cfg.get(key)]
    if used:
        raise ModelLoadError(f"{adapter_dir} uses {', '.join(used)}, which dba eval does not load; score it with "
                             "PEFT directly.")
    try:
        targets = cfg["target_modules"]
        return LoraSettings(rank=int(cfg["r"]), alpha=float(cfg["lora_alpha"]), dropout=0.0,
                            target_modules=targets if isinstance(targets, str) else sorted(targets))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"{adapter_dir}/adapter_config.json lacks a usable {e} entry.") from None


def _load_adapter_weights(lm, adapter_dir: Path) -> None:
    """Copy an adapter's saved weights into the freshly initialised adapter of ``lm`` (same layout), checking that
    every adapter weight was found."""
    from peft import load_peft_weights, set_peft_model_state_dict

    try:
        state = load_peft_weights(str(adapter_dir), device="cpu")
    except Exception as e:  # noqa: BLE001 -- missing/corrupt weight file: say which folder
        raise ModelLoadError(f"Cannot read the adapter weights in {adapter_dir}: {e}") from None
    try:
        result = set_peft_model_state_dict(lm.model, state)
    except RuntimeError as e:  # shape mismatch: the adapter belongs to another base model
        first = str(e).strip().splitlines()
        raise ModelLoadError(f"The adapter in {adapter_dir} does not fit model {lm.name!r}: "
                             f"{first[-1] if first else e}") from None
    missing = [k for k in result.missing_keys if "lora_" in k]
    if result.unexpected_keys or missing:
        raise ModelLoadError(
            f"The adapter in {adapter_dir} does not fit model {lm.name!r}: "
            f"{len(result.unexpected_keys)} saved weights have no place in it, {len(missing)} adapter weights "
            "are missing. Pass the base model it was trained on (--model).")


def load_trained(path: str | Path, *, model: str | None = None, quantization: str | None = None,
                 device: str = "auto", trust_remote_code: bool = False):
    """Load what a fine-tune produced, ready to score: a run folder (its config names the base model, quantisation
    and LoRA settings; its ``adapter/`` or ``model/`` holds the result) or a PEFT adapter folder (on top of
    ``model``, by default the run's model when the folder sits in a run folder, else the embedded default).

    ``model`` / ``quantization`` override what the run folder says. Returns a :class:`dba.models.LoadedModel`.
    """
    from .models import load_model

    path = Path(path).expanduser()
    if not path.exists():
        raise DBAError(f"{path} does not exist.")
    if not path.is_dir():
        raise DBAError(f"{path} is a file; pass a run folder or an adapter folder.")
    if is_run_folder(path):
        cfg = _read_json(path / "config.json", "run config")
        status = _read_json(path / "status.json", "run status") if (path / "status.json").exists() else {}
        name = model or cfg.get("model") or "default"
        quant = quantization or cfg.get("quantization") or "none"
        dtype = cfg.get("dtype")  # as trained (None = the device's default)
        if (path / "adapter").is_dir():
            adapter_dir = path / "adapter"
        elif (path / "model").is_dir():
            if quant != "none":
                raise DBAError(f"{path} holds a fully fine-tuned model; it cannot be loaded {quant}.")
            return load_model(str(path / "model"), lora=None, device=device, dtype=cfg.get("dtype"),
                              trust_remote_code=trust_remote_code)
        else:
            state = status.get("status", "unknown")
            raise DBAError(f"{path} holds no result yet (no adapter/ or model/; run status: {state}). "
                           "Only a completed run can be scored.")
    elif is_adapter_folder(path):
        adapter_dir = path
        parent_cfg = path.parent / "config.json"
        run_cfg = _read_json(parent_cfg, "run config") if is_run_folder(path.parent) else {}
        name = model or run_cfg.get("model") or "default"
        quant = quantization or run_cfg.get("quantization") or "none"
        dtype = run_cfg.get("dtype")
    else:
        raise DBAError(f"{path} is neither a run folder (config.json from dba train) nor a PEFT adapter folder "
                       "(adapter_config.json).")
    lora = adapter_lora_settings(adapter_dir)
    lm = load_model(name, quantization=quant, lora=lora, device=device, dtype=dtype,
                    trust_remote_code=trust_remote_code)
    _load_adapter_weights(lm, adapter_dir)
    lm.extra["adapter"] = str(adapter_dir)
    return lm


# --------------------------------------------------------------------------------------------------------------------
# Scoring files


@dataclass
class EvalSet:
    """One multiple-choice file to score."""

    name: str
    """Shown in the table: a bundled name or the file's name."""
    path: str
    role: str = "file"
    """``general`` / ``domain`` (bundled sets, used for S) or ``file``."""


def eval_set_name(path: Path) -> str:
    # the bundled files are all called eval.jsonl: name them by their folder
    return path.parent.name if path.stem in ("eval", "test", "validation") else path.stem


def resolve_eval_sets(files: list[str] | None = None, domains: list[str] | None = None,
                      general: bool = False) -> list[EvalSet]:
    """The sets ``dba eval`` was asked for: bundled general / domain eval sets and explicit files, in that order."""
    from .data import bundled_path

    sets: list[EvalSet] = []
    if general:
        sets.append(EvalSet("general", str(bundled_path("general", "eval")), "general"))
    for d in domains or []:
        p = Path(d).expanduser()
        if p.is_file():  # a domain given as its eval file
            sets.append(EvalSet(eval_set_name(p), str(p), "domain"))
        else:
            sets.append(EvalSet(d, str(bundled_path(d, "eval")), "domain"))
    for f in files or []:
        p = Path(f).expanduser()
        sets.append(EvalSet(eval_set_name(p), str(p), "file"))
    if not sets:
        raise DBAError("Nothing to score: give --eval FILE, --domain NAME or --general.")
    names = [s.name for s in sets]
    for i, s in enumerate(sets):  # two files with one name: use the path instead
        if names.count(s.name) > 1:
            sets[i] = EvalSet(s.path, s.path, s.role)
    return sets


def evaluate_sets(model, tokenizer, sets: list[EvalSet], *, scorer: str = "mean", max_items: int | None = None,
                  batch_size: int = 16, max_new_tokens: int = 32, items: dict | None = None) -> dict:
    """Score ``model`` on each set. Returns ``{"scorer", "sets": [row, ...], "joint": [...]}``: a row per set with
    ``name, path, role, n, loglik, loglik_norm, gen, score`` (accuracies in [0, 1]; None where the scorer did not
    run), and for a general set plus domain sets, ``{"general", "domain", "s_g", "s_d", "s"}`` per domain."""
    from .data import load_mc
    from .scores import SCORERS, combine, harmonic_mean, score_generation, score_mc_loglik

    if scorer not in SCORERS:
        raise DBAError(f"Unknown scorer {scorer!r}; use one of {', '.join(SCORERS)}.")
    if max_items is not None and max_items < 1:
        raise DBAError(f"max_items must be at least 1, got {max_items}.")
    if batch_size < 1:
        raise DBAError(f"batch_size must be at least 1, got {batch_size}.")
    rows = []
    for s in sets:
        its = (items or {}).get(s.path) or load_mc(s.path)
        its = its[:max_items] if max_items else its
        ll = score_mc_loglik(model, tokenizer, its, batch_size=batch_size) if scorer in ("mean", "loglik") else None
        gen = score_generation(model, tokenizer, its, batch_size=batch_size, max_new_tokens=max_new_tokens) \
            if scorer in ("mean", "gen") else None
        row = {"name": s.name, "path": s.path, "role": s.role, "n": len(its),
               "loglik": ll.accuracy if ll else None, "loglik_norm": ll.accuracy_norm if ll else None,
               "gen": gen.accuracy if gen else None}
        row["score"] = combine(row["loglik"], row["gen"], scorer)
        rows.append(row)
    joint = []
    gen_rows = [r for r in rows if r["role"] == "general"]
    if gen_rows:
        g = gen_rows[0]
        for r in rows:
            if r["role"] == "domain":
                joint.append({"general": g["name"], "domain": r["name"], "s_g": g["score"], "s_d": r["score"],
                              "s": harmonic_mean(g["score"], r["score"])})
    return {"scorer": scorer, "sets": rows, "joint": joint}


def format_table(result: dict) -> str:
    """The plain-text table ``dba eval`` prints."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    head = ["set", "n", "loglik", "loglik-norm", "gen", f"score ({result['scorer']})"]
    body = [[r["name"], str(r["n"]), pct(r["loglik"]), pct(r["loglik_norm"]), pct(r["gen"]), pct(r["score"])]
            for r in result["sets"]]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))
             for row in [head] + body]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for j in result["joint"]:
        lines.append(f"S ({j['general']} x {j['domain']}): S_G {pct(j['s_g'])}, S_D {pct(j['s_d'])}, "
                     f"S {pct(j['s'])}")
    lines.append("(accuracies in %; score = how the scorer combines log-likelihood and generation accuracy)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# The command


def cmd_eval(args) -> int:
    from .data import load_mc
    from .models import load_model

    if args.run and args.adapter:
        raise DBAError("Give either --run or --adapter, not both.")
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
    result = evaluate_sets(lm.model, lm.tokenizer, sets, scorer=args.scorer, max_items=args.max_items,
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
    from .models import LoraSettings, load_model

    return load_model(args.model or "default", quantization=args.quantization, lora=LoraSettings(rank=1, alpha=1),
                      device=args.device, trust_remote_code=args.trust_remote_code)


def add_command(sub) -> None:
    """Register ``dba eval`` on the CLI's subparsers."""
    p = sub.add_parser("eval", help="score a base model, an adapter or a run folder on MC eval files",
                       description="Multiple-choice evaluation: per file, log-likelihood accuracy (summed and "
                                   "length-normalised), greedy-generation accuracy and the combined score.")
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
    o.add_argument("--scorer", choices=["mean", "loglik", "gen"], default="mean",
                   help="how each set's score combines log-likelihood and generation accuracy")
    o.add_argument("--max-items", type=int, default=None, help="score only the first N items of each file")
    o.add_argument("--batch-size", type=int, default=16)
    o.add_argument("--max-new-tokens", type=int, default=32, help="reply length for the generation scorer")
    o.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_eval)
