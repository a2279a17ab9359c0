"""Fine-tuning runs: ``direct``, ``mixture`` and ``dba`` on the same data order, seed, steps and budget.

One entry point, :func:`finetune`. A run folder holds:

- ``config.json``    — the full :class:`FinetuneConfig` (and the anchor it used: path, hash, provenance);
- ``status.json``    — running / completed / cancelled / failed, the last step, timings and token counts;
- ``metrics.jsonl``  — one ``{"type": "step", ...}`` line per optimiser step (loss, ‖g_D‖, ‖ĝ‖, ρ, γ, λ, lr, ...)
  and ``{"type": "eval", ...}`` lines with S_G, S_D, S at each evaluation (step 0 is the base model);
- ``adapter/`` (PEFT ``save_pretrained``) or ``model/`` (full fine-tuning) — the result;
- ``checkpoint/``    — weights + optimiser + RNG state every ``checkpoint_every`` steps and on cancel, for ``resume``.

Every file is written atomically (temp + rename). Cancelling (a ``threading.Event`` or a callback returning True)
stops before the next step, writes a checkpoint and marks the folder ``cancelled``; ``resume=True`` continues the
same schedule bit for bit.
"""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .config import FinetuneConfig, Method  # noqa: F401  (moved to dba.config; re-exported)
from .data import Corpus, MCItem, batch_plan, collate, load_corpus, load_mc, resolve_corpus
from .errors import DBAError
from .global_gradient import GlobalGradient, estimate_global_gradient, file_hash
from .io import atomic_dir, atomic_write_json, read_jsonl
from .models import LoadedModel, load_model
from .optim import DBAOptimizer

@dataclass
class RunResult:
    """What :func:`finetune` returns."""

    run_dir: Path
    status: str
    steps_done: int
    metrics: list[dict]
    scores: dict | None
    loaded: LoadedModel | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _device_seconds(wall: float, device: torch.device) -> float:
    """Seconds an accelerator (or the CPU, as one device) was held by the run."""
    return wall * (torch.cuda.device_count() if device.type == "cuda" else 1)


class _Run:
    """Internals of one run; :func:`finetune` is the public face."""

    def __init__(self, cfg: FinetuneConfig, *, resume: bool, progress: bool):
        self.cfg, self.progress = cfg, progress
        self.dir = Path(cfg.output_dir)
        self.resume = resume

    # ---- files --------------------------------------------------------------------------------------------------
    def write_status(self, **kw) -> None:
        self.status.update(kw)
        atomic_write_json(self.dir / "status.json", self.status)

    def append_metric(self, rec: dict) -> None:
        with open(self.dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        self.metrics.append(rec)


def load_eval_sets(cfg: FinetuneConfig) -> tuple[list[MCItem], list[MCItem]]:
    """The general and domain MC sets: the files named in the config, else the bundled ones (when they exist)."""
    def one(explicit: str | None, corpus: str) -> list[MCItem]:
        if explicit:
            return load_mc(explicit)
        try:
            return load_mc(resolve_corpus(corpus, "eval"))
        except DBAError:  # a user corpus without a bundled eval set: no score for it
            return []
    return one(cfg.general_eval, cfg.general), one(cfg.domain_eval, cfg.domain)


def evaluate_model(model, tokenizer, general: list[MCItem], domain: list[MCItem], cfg: FinetuneConfig) -> dict:
    """S_G, S_D, S of the model as it is now (a dict for metrics.jsonl)."""
    from .scores import evaluate

    sc = evaluate(model, tokenizer, general, domain, scorer=cfg.eval_scorer, max_items=cfg.eval_items)
    return {"s_g": sc.s_g, "s_d": sc.s_d, "s": sc.s, "detail": sc.detail}


def prepare_anchor(cfg: FinetuneConfig, lm: LoadedModel, general: Corpus | None, run_dir: Path,
                   progress: bool = True, callback=None) -> tuple[GlobalGradient, Path]:
    """The anchor of a ``dba`` run: the file named in the config, or one estimated now into the run folder."""
    if cfg.anchor:
        path = Path(cfg.anchor)
        return GlobalGradient.load(path, lm.model), path
    if general is None:
        general = load_corpus(resolve_corpus(cfg.general, "train"), lm.tokenizer, cfg.max_length)
    plan = batch_plan(len(general), cfg.batch_size, cfg.anchor_batches, cfg.seed + 7919)
    batches = (collate([general.examples[i] for i in idx], lm.tokenizer.pad_token_id) for idx in plan)
    g = estimate_global_gradient(lm.model, batches, energy=cfg.anchor_energy, max_batches=cfg.anchor_batches,
                                 progress=progress, callback=callback, base_model_id=lm.name,
                                 corpus_name=general.name, corpus_hash=general.content_hash)
    path = g.save(run_dir / "anchor.safetensors")
    return g, path


def finetune(
    cfg: FinetuneConfig,
    *,
    resume: bool = False,
    cancel: threading.Event | Callable[[], bool] | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = True,
    anchor: GlobalGradient | None = None,
    keep_model: bool = False,
) -> RunResult:
    """Run one fine-tune (see the module docstring for the folder it writes).

    ``callback(record)`` receives every metrics record (steps and evaluations) as it is written, plus
    ``{"type": "phase", ...}`` notes, for live UIs. ``anchor`` passes an already-loaded global gradient (the compare
    job reuses one for every run). ``keep_model`` returns the trained model in the result.
    """
    if cfg.steps < 1:
        raise DBAError("steps must be at least 1.")
    if cfg.method not in ("dba", "direct", "mixture"):
        raise DBAError(f"Unknown method {cfg.method!r}; use dba, direct or mixture.")
    if not 0.0 <= cfg.mixture_ratio <= 1.0:
        raise DBAError("mixture_ratio must be in [0, 1].")
    run = _Run(cfg, resume=resume, progress=progress)
    out = run.dir
    ckpt = out / "checkpoint"
    if resume:
        if not (ckpt / "state.json").exists():
            raise DBAError(f"Nothing to resume in {out}: no checkpoint/ folder (was the run saved?).")
        saved = json.loads((out / "config.json").read_text())
        saved.pop("anchor_info", None)
        if FinetuneConfig.from_dict(saved).to_dict() != cfg.to_dict():
            raise DBAError(f"The config differs from the one saved in {out}/config.json; resume needs the same "
                           "config (load it with FinetuneConfig.from_dict).")
    elif (out / "status.json").exists():
        raise DBAError(f"{out} already holds a run; choose another output folder or resume it.")
    out.mkdir(parents=True, exist_ok=True)

    def note(**kw):
        if callback is not None:
            callback({"type": "phase", **kw})

    t_start = time.perf_counter()
    old = json.loads((out / "status.json").read_text()) if resume and (out / "status.json").exists() else {}
    run.status = {"status": "running", "method": cfg.method, "step": old.get("step", 0), "steps": cfg.steps,
                  "tokens": old.get("tokens", 0)}
    run.metrics = read_jsonl(out / "metrics.jsonl") if resume else []
    run.write_status()

    try:
        return _execute(cfg, run, resume=resume, cancel=cancel, callback=callback, progress=progress,
                        anchor=anchor, keep_model=keep_model, note=note, t_start=t_start)
    except BaseException as e:
        if run.status.get("status") == "running":
            run.write_status(status="failed", error=f"{type(e).__name__}: {e}",
                             wall_seconds=round(time.perf_counter() - t_start, 3))
        raise


def _execute(cfg: FinetuneConfig, run: "_Run", *, resume, cancel, callback, progress, anchor, keep_model, note,
             t_start) -> RunResult:
    from tqdm.auto import tqdm

    out = run.dir
    ckpt = out / "checkpoint"
    note(phase="load", message=f"loading model {cfg.model}")
    _seed_everything(cfg.seed)  # before LoRA init: same seed, same adapter start
    lm = load_model(cfg.model, quantization=cfg.quantization, lora=cfg.lora, device=cfg.device, dtype=cfg.dtype,
                    trust_remote_code=cfg.trust_remote_code)
    model, tok = lm.model, lm.tokenizer
    domain = load_corpus(resolve_corpus(cfg.domain, "train"), tok, cfg.max_length)
    general = None
    if cfg.method == "mixture" or (cfg.method == "dba" and anchor is None and not cfg.anchor):
        general = load_corpus(resolve_corpus(cfg.general, "train"), tok, cfg.max_length)
    gen_eval, dom_eval = load_eval_sets(cfg)

    # The same domain data order for every method; mixture swaps a share of each batch for general examples.
    n_general = round(cfg.mixture_ratio * cfg.batch_size) if cfg.method == "mixture" else 0
    micro_steps = cfg.steps * cfg.grad_accum
    dom_plan = batch_plan(len(domain), cfg.batch_size - n_general, micro_steps, cfg.seed) \
        if cfg.batch_size - n_general > 0 else [[] for _ in range(micro_steps)]
    gen_plan = batch_plan(len(general), n_general, micro_steps, cfg.seed + 1) if n_general else None

    anchor_path = None
    if cfg.method == "dba":
        if anchor is None:
            note(phase="anchor", message="estimating the global gradient")
            anchor, anchor_path = prepare_anchor(cfg, lm, general, out, progress)
        else:
            anchor.check_compatible(model, weights=not resume)
            anchor_path = anchor.meta.get("path")
    opt_cfg = cfg.optimizer_config()
    opt = DBAOptimizer(model, anchor if cfg.method == "dba" else None, opt_cfg)

    start = 0
    if resume:
        start = _load_checkpoint(ckpt, model, opt)
        # drop metrics of steps after the checkpoint: they will be run again
        run.metrics = [m for m in run.metrics if m.get("step", 0) < start or
                       (m.get("type") == "eval" and m.get("step", 0) <= start)]
        from .io import atomic_write_text
        atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in run.metrics))
    else:
        info = None
        if anchor is not None:
            info = {"path": str(anchor_path) if anchor_path else None,
                    "sha256_16": file_hash(anchor_path) if anchor_path and Path(anchor_path).exists() else None,
                    **{k: anchor.meta.get(k) for k in ("base_model", "weight_fingerprint", "space", "corpus",
                                                       "corpus_hash", "batches", "tokens", "energy", "rank")}}
        atomic_write_json(out / "config.json", {**cfg.to_dict(), "anchor_info": info})

    timing = {"anchor_seconds": anchor.meta.get("seconds") if anchor is not None and anchor_path
              and str(anchor_path).startswith(str(out)) else 0.0}
    run.write_status(**timing)

    if start == 0 and cfg.evaluate_at_end and (gen_eval or dom_eval):
        note(phase="eval", message="scoring the base model")
        rec = {"type": "eval", "step": 0, **evaluate_model(model, tok, gen_eval, dom_eval, cfg)}
        run.append_metric(rec)
        if callback:
            callback(rec)

    tokens = run.status.get("tokens", 0) if resume else 0
    t_train = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.method}", unit="step", disable=not progress)
    status = "completed"
    step = start
    try:
        for step in range(start, cfg.steps):
            if _cancelled(cancel):
                status = "cancelled"
                break
            loss_sum = 0.0
            for k in range(cfg.grad_accum):
                i = step * cfg.grad_accum + k
                examples = [domain.examples[j] for j in dom_plan[i]]
                if gen_plan is not None:
                    examples += [general.examples[j] for j in gen_plan[i]]
                batch = {key: v.to(lm.device) for key, v in collate(examples, tok.pad_token_id).items()}
                loss = model(**batch).loss / cfg.grad_accum
                loss.backward()
                loss_sum += float(loss.detach())
                tokens += int(batch["attention_mask"].sum())
            clip = {}
            if cfg.max_grad_norm is not None:
                params = [p for g in opt.param_groups for p in g["params"]]
                # grad_norm in the record is ‖g_D‖ as DBA sees it (after clipping); keep the raw norm next to it
                clip["grad_norm_raw"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
            opt.set_loss(loss_sum)
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec = {"type": "step", **opt.last_record, **clip, "tokens": tokens,
                   "elapsed": round(time.perf_counter() - t_start, 3)}
            run.append_metric(rec)
            if callback:
                callback(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum:.3f}", rho=f"{rec.get('rho', 0):+.2f}", lam=f"{rec.get('lam', 1):.2f}")
            done = step + 1
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps and (gen_eval or dom_eval):
                erec = {"type": "eval", "step": done, **evaluate_model(model, tok, gen_eval, dom_eval, cfg)}
                run.append_metric(erec)
                if callback:
                    callback(erec)
                model.train()
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
                _save_checkpoint(ckpt, model, opt, done)
            run.write_status(step=done, tokens=tokens)
        else:
            step = cfg.steps
    finally:
        bar.close()
    train_seconds = time.perf_counter() - t_train

    scores = None
    if status == "cancelled":
        _save_checkpoint(ckpt, model, opt, step)
        note(phase="cancelled", message=f"cancelled before step {step}; checkpoint saved, resumable")
    else:
        if cfg.evaluate_at_end and (gen_eval or dom_eval):
            note(phase="eval", message="scoring the fine-tuned model")
            erec = {"type": "eval", "step": cfg.steps, **evaluate_model(model, tok, gen_eval, dom_eval, cfg)}
            run.append_metric(erec)
            if callback:
                callback(erec)
            scores = {k: erec[k] for k in ("s_g", "s_d", "s")}
        _save_result(out, lm)
    wall = time.perf_counter() - t_start
    run.write_status(status=status, step=step, tokens=tokens, train_seconds=round(train_seconds, 3),
                     wall_seconds=round(wall, 3), device_seconds=round(_device_seconds(wall, lm.device), 3),
                     device=str(lm.device), scores=scores)
    note(phase=status, message=f"run {status}")
    return RunResult(run_dir=out, status=status, steps_done=step, metrics=run.metrics, scores=scores,
                     loaded=lm if keep_model else None)


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def _trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable(model, ckpt: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(ckpt / "trainable.safetensors"))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def _save_checkpoint(ckpt: Path, model, opt: DBAOptimizer, step: int) -> None:
    """Trainable weights and optimiser moments as safetensors (no pickle), counters and RNG as JSON; atomically."""
    from safetensors.torch import save_file

    def build(tmp: Path):
        save_file({n: t.contiguous() for n, t in _trainable_state(model).items()},
                  str(tmp / "trainable.safetensors"))
        sd = opt.state_dict()
        tensors, scalars = {}, {}
        for idx, st in sd["state"].items():
            for key, val in st.items():
                if torch.is_tensor(val):
                    tensors[f"{idx}.{key}"] = val.detach().cpu().contiguous()
                else:
                    scalars[f"{idx}.{key}"] = val
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "state.json", {"step": step, "param_groups": sd["param_groups"], "scalars": scalars,
                                               "py_rng": random.getstate()})

    atomic_dir(ckpt, build)


def _load_checkpoint(ckpt: Path, model, opt: DBAOptimizer) -> int:
    """Restore weights, optimiser and RNG from :func:`_save_checkpoint`; returns the step to continue from."""
    from safetensors.torch import load_file

    _load_trainable(model, ckpt)
    meta = json.loads((ckpt / "state.json").read_text())
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    state: dict[int, dict] = {}
    for key, val in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    v = meta["py_rng"]
    random.setstate((v[0], tuple(v[1]), v[2]))
    return int(meta["step"])


def _save_result(out: Path, lm: LoadedModel) -> None:
    """The adapter (PEFT format) or the whole model (full fine-tuning), atomically."""
    if lm.lora is not None:
        atomic_dir(out / "adapter", lambda tmp: lm.model.save_pretrained(tmp))
    else:
        def build(tmp):
            lm.model.save_pretrained(tmp)
            lm.tokenizer.save_pretrained(tmp)
        atomic_dir(out / "model", build)


def read_run(run_dir: str | Path) -> dict:
    """A run folder's config, status and metrics (for compare, plots and the app)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() and not (run_dir / "status.json").exists():
        raise DBAError(f"{run_dir} is not a run folder (no config.json / status.json).")
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    return {"dir": str(run_dir), "config": cfg, "status": status, "metrics": read_jsonl(run_dir / "metrics.jsonl")}
