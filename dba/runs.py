"""Reading what runs wrote: a run folder as a dict (:func:`read_run`), a comparison's runs (:func:`load_runs`), and
a trained result as a model ready to score or chat with (:func:`load_trained`: a run folder or a PEFT adapter
folder). The CLI, compare's report, the app and the notebooks use these; plots take the dicts they return.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from .config import LoraSettings
from .errors import DBAError, ModelLoadError
from .io import read_jsonl

# --------------------------------------------------------------------------------------------------------------------
# A run folder as a dict, and whether the process that writes it is alive (dba.train writes the folders and re-exports
# these names; dba.export, compare, the app and the plots read through them, so none of them imports the trainer)


STALE_OTHER_HOST_SECONDS = 15 * 60
"""A ``running`` folder written from another host counts as interrupted once its heartbeat is this old (the process
cannot be checked from here)."""


# --------------------------------------------------------------------------------------------------------------------
# Who runs a folder: pid + host + process start time, so a killed run is not taken for a live one


def _proc_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


_ACTIVE: set[str] = set()  # run folders this process is running now (any thread)


def owner_alive(status: dict, run_dir: str | Path | None = None) -> bool:
    """Whether the process recorded in a ``running`` status is still running that folder (``run_dir``: the folder
    the status was read from; a copy of a live run's folder is not live).

    Same host: the pid exists and (where recorded) started at the same time, so a reused pid does not count.
    Another host: only the heartbeat can tell; alive while younger than :data:`STALE_OTHER_HOST_SECONDS`.
    Statuses written before pids were recorded count as not alive."""
    pid, host = status.get("pid"), status.get("host")
    if not pid or not host:
        return False
    if host != socket.gethostname():
        return time.time() - float(status.get("heartbeat") or 0) < STALE_OTHER_HOST_SECONDS
    if run_dir is not None and status.get("run_dir") and str(Path(run_dir).resolve()) != status["run_dir"]:
        return False
    if pid == os.getpid():
        return str(status.get("run_dir")) in _ACTIVE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    except OSError:
        return False
    start = status.get("pid_start")
    return start is None or _proc_start(int(pid)) in (None, start)


def effective_state(status: dict, run_dir: str | Path | None = None) -> str:
    """``status.json``'s state, with a ``running`` folder whose process is gone (kill -9, a crash, a reboot) read as
    ``interrupted``."""
    st = status.get("status", "")
    return "interrupted" if st == "running" and not owner_alive(status, run_dir) else st


def read_run(run_dir: str | Path) -> dict:
    """A run folder's config, status and metrics (for compare, plots and the app).

    A ``running`` status whose process is gone reads as ``interrupted`` (with ``"stale": True``)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() and not (run_dir / "status.json").exists():
        raise DBAError(f"{run_dir} is not a run folder (no config.json / status.json).")
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    status = json.loads((run_dir / "status.json").read_text()) if (run_dir / "status.json").exists() else {}
    if status.get("status") == "running" and "pid" in status and effective_state(status, run_dir) == "interrupted":
        status = {**status, "status": "interrupted", "stale": True}
    return {"dir": str(run_dir), "config": cfg, "status": status, "metrics": read_jsonl(run_dir / "metrics.jsonl")}



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



def load_runs(out_dir: str | Path, domain: str | None = None) -> list[dict]:
    """The run dicts of a comparison folder (:func:`read_run` plus ``label``, ``method``, ``domain``, ``seed``), in
    run order, for plots and the app. Runs not started yet are left out."""
    out = Path(out_dir)
    if not (out / "compare.json").exists():
        raise DBAError(f"{out} is not a comparison folder (no compare.json).")
    listing = json.loads((out / "compare.json").read_text())["runs"]
    runs = []
    for r in listing:
        if domain is not None and r["domain"] != domain:
            continue
        d = out / r["run_dir"]
        if (d / "status.json").exists():
            runs.append({**read_run(d), "label": r["label"], "method": r["method"], "domain": r["domain"],
                         "seed": r.get("seed")})
    return runs
