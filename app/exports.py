"""Chat (the base model and the tuned one answering the same prompt) and export (adapter zip, merged model zip: the
library's :func:`dba.export.export_run`, scrubbed of server folders, zipped).

Runs are loaded with the library's :func:`dba.runs.load_trained`. A LoRA run is loaded once, base model with its
trained adapter: the tuned answer is generated with the adapter enabled and the base answer inside PEFT's
``disable_adapter()`` — the same weights, one copy in memory. A full fine-tuning run loads the base model beside the
tuned checkpoint.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
import zipfile
from pathlib import Path

import torch

from dba.errors import DBAError
from dba.models import load_model
from dba.runs import load_trained
from dba.scores import mc_prompt

_CACHE_LOCK = threading.Lock()
_CACHE: dict = {"key": None, "value": None}
"""One chat model at a time (memory): the run folder it was loaded for and (base, tuned, kind)."""


def run_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise DBAError(f"{run_dir} is not a run folder (no config.json).")
    cfg = json.loads(path.read_text())
    if not ((Path(run_dir) / "adapter").exists() or (Path(run_dir) / "model").exists()):
        raise DBAError(f"{Path(run_dir).name} has no trained result yet (no adapter/ or model/ folder): the run did "
                       "not complete.")
    return cfg


def load_pair(run_dir: Path):
    """(base, tuned, kind) for a run, loaded with the library's :func:`dba.runs.load_trained`: kind
    "adapter" (one PEFT model, base = adapter disabled) or "full" (the base model loaded beside the tuned one)."""
    run_dir = Path(run_dir).resolve()
    with _CACHE_LOCK:
        if _CACHE["key"] == str(run_dir):
            return _CACHE["value"]
        _CACHE["key"], _CACHE["value"] = None, None  # free the old one before loading the next
        cfg = run_config(run_dir)
        device = cfg.get("device", "auto")
        tuned = load_trained(run_dir, device=device)
        if (run_dir / "adapter").exists():
            value = (tuned, tuned, "adapter")
        else:
            base = load_model(cfg["model"], quantization="none", lora=None, device=device)
            value = (base, tuned, "full")
        _CACHE["key"], _CACHE["value"] = str(run_dir), value
        return value


@torch.no_grad()
def _generate(lm, prompt: str, max_new_tokens: int) -> str:
    tok, model = lm.tokenizer, lm.model
    has_template = bool(getattr(tok, "chat_template", None))
    enc = tok(mc_prompt(tok, prompt), return_tensors="pt", add_special_tokens=not has_template)
    enc = {k: v.to(lm.device) for k, v in enc.items()}
    was_training = model.training
    model.eval()
    try:
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, use_cache=True)
    finally:
        model.train(was_training)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def chat(run_dir: Path, prompt: str, max_new_tokens: int = 64) -> tuple[str, str]:
    """The base model's and the tuned model's greedy answers to one prompt."""
    if not prompt or not prompt.strip():
        raise DBAError("Type a question first.")
    base, tuned, kind = load_pair(run_dir)
    if kind == "adapter":
        with tuned.model.disable_adapter():
            a = _generate(base, prompt, max_new_tokens)
        b = _generate(tuned, prompt, max_new_tokens)
    else:
        a, b = _generate(base, prompt, max_new_tokens), _generate(tuned, prompt, max_new_tokens)
    empty = "(no answer: the model ended its reply at once)"
    return a or empty, b or empty


def _zip_folder(folder: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    """Zip ``folder``'s files (and ``extra`` {name in zip: contents}) to ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    tmp.replace(dest)
    return dest


def scrub(text: str, hide: dict[str, str]) -> str:
    """``text`` with each server folder in ``hide`` replaced by its stand-in (longest first)."""
    for folder in sorted(hide, key=len, reverse=True):
        if folder:
            text = text.replace(folder.rstrip("/") + "/", hide[folder]).replace(folder.rstrip("/"), hide[folder])
    return text


def _provenance(run_dir: Path, hide: dict[str, str] | None) -> dict[str, bytes]:
    """The run's config, status and metrics for ``dba-run/``, with the server's session folders (``hide``) replaced
    so that nothing in a download names a session's folder or the server's layout."""
    out = {}
    for n in ("config.json", "status.json", "metrics.jsonl"):
        f = run_dir / n
        if f.exists():
            out[f"dba-run/{n}"] = scrub(f.read_text(encoding="utf-8"), hide or {}).encode("utf-8")
    return out


_TEXT = (".json", ".md", ".txt", ".jinja")
"""Files of an export whose text is scrubbed of server folders (configs, the model card, tokenizer files)."""


def _export(run_dir: Path, out_dir: Path, hide: dict[str, str] | None, merge: bool, name: str) -> Path:
    """The library's shareable export (:func:`dba.export.export_run`: model card, training config, tokenizer) of
    ``run_dir``, its text files scrubbed of ``hide``, zipped with the run's provenance under ``dba-run/``."""
    from dba.export import export_run

    stage = Path(out_dir) / f".export-{run_dir.name}-{time.time_ns()}"
    try:
        export_run(run_dir, stage, merge=merge, progress=False)
        for f in stage.rglob("*"):
            if f.is_file() and f.suffix in _TEXT and f.stat().st_size < 64 * 2**20:
                text = f.read_text(encoding="utf-8", errors="surrogateescape")
                clean = scrub(text, hide or {})
                if clean != text:
                    f.write_text(clean, encoding="utf-8", errors="surrogateescape")
        return _zip_folder(stage, Path(out_dir) / f"{run_dir.name}-{name}.zip", _provenance(run_dir, hide))
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def export_adapter(run_dir: Path, out_dir: Path, hide: dict[str, str] | None = None) -> Path:
    """The run's PEFT adapter (adapter_config.json + adapter_model.safetensors, model card, tokenizer) as a zip, with
    the run's config, status and metrics under ``dba-run/`` (server folders in ``hide`` replaced, see
    :func:`scrub`). A full fine-tuning run has no adapter: export its model instead."""
    run_dir = Path(run_dir)
    run_config(run_dir)
    if not (run_dir / "adapter").exists():
        raise DBAError(f"{run_dir.name} was a full fine-tuning run: it has no adapter. Use “merged model” to "
                       "download the fine-tuned weights.")
    return _export(run_dir, out_dir, hide, merge=False, name="adapter")


def export_merged(run_dir: Path, out_dir: Path, hide: dict[str, str] | None = None) -> Path:
    """A standalone checkpoint (base + adapter merged, with the tokenizer and a model card) as a zip; a 4-bit run's
    base is de-quantised first by the library (the weights the adapter was trained against). A full fine-tuning run
    is its own standalone checkpoint."""
    run_dir = Path(run_dir)
    run_config(run_dir)
    return _export(run_dir, out_dir, hide, merge=True, name="merged")
