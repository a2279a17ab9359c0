"""One compact table of the headline numbers from ``python -m bench --json`` files:
``python -m bench.summary run1.json run2.json``."""
from __future__ import annotations

import json
import sys

from .common import table


def rows_from(path: str) -> list[list]:
    with open(path) as f:
        data = json.load(f)
    rows = []
    for spec, info in data.get("models", {}).items():
        a, c, d = info.get("a", {}), info.get("c", {}), info.get("d", {})
        med = a.get("median", {})
        direct_full = med.get("direct", {}).get("full", float("nan"))
        overhead = med.get("dba", {}).get("opt", float("nan")) - med.get("direct", {}).get("opt", float("nan"))
        direct_peaks = {k: v["cuda_peak_mb"] / 1024 for k, v in d.get("direct", {}).items()
                        if isinstance(v, dict) and "cuda_peak_mb" in v}
        dba_peaks = d.get("dba_run_peak_gb", {})
        rows.append([
            spec,
            a.get("pooled_full_ratio", float("nan")),
            a.get("full_ratio", float("nan")),
            overhead * 1e3,
            direct_full * 1e3,
            c.get("anchor_tokens_per_s", float("nan")),
            c.get("epoch_tokens_per_s", float("nan")),
            "; ".join(f"{k}: {v:.2f}" for k, v in direct_peaks.items()) or "–",
            "; ".join(f"{k}: {v:.2f}" for k, v in dba_peaks.items()) or "–",
        ])
    return rows


def main(argv=None) -> int:
    paths = argv if argv is not None else sys.argv[1:]
    rows = []
    for p in paths:
        try:
            rows += rows_from(p)
        except (OSError, ValueError) as e:
            rows.append([p, f"unreadable: {e}"] + [""] * 7)
    print(table("Summary", ["model", "DBA / direct full step (pooled fwd+bwd)", "(raw medians)",
                            "DBA opt-step overhead ms", "direct full step ms",
                            "anchor tokens/s", "plain epoch tokens/s", "peak VRAM direct GB",
                            "peak VRAM DBA run GB (anchor, checkpointing)"], rows,
                note="Targets: full step ≤ 1.03× direct; 7B-class DBA peak ≤ 24 GB at seq 1024, batch 1, streaming."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
