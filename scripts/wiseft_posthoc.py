"""WiSE-FT points for chosen runs of a finished comparison, without training: each run's weights interpolated with
the base model at the given α (θ_α = (1 − α)·θ_0 + α·θ_ft, dba.wiseft) and scored like the run; then the
comparison's tables and plots are refreshed (``dba compare --resume``, which keeps every finished run).

    python scripts/wiseft_posthoc.py runs/study-finance --labels direct --alphas 0.5

Unlike ``dba compare --wiseft`` (every run of the comparison, and part of its config), this scores only the runs
named, so a long study can add the WiSE-FT curve of its direct runs afterwards. Needs the runs' saved weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dba.compare import compare, plan_runs, resume_config  # noqa: E402
from dba.compare.posthoc import score_wiseft_of_folder  # noqa: E402
from dba.errors import DBAError  # noqa: E402
from dba.train import load_eval_sets  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a finished comparison (dba compare -o DIR)")
    p.add_argument("--labels", default="direct", help="comma-separated run labels (default: direct)")
    p.add_argument("--alphas", default="0.5", help="comma-separated α in (0, 1) (default: 0.5)")
    a = p.parse_args(argv)
    try:
        alphas = [float(x) for x in a.alphas.split(",") if x.strip()]
        if not alphas or not all(0.0 < x < 1.0 for x in alphas):
            raise DBAError(f"--alphas must be numbers strictly between 0 and 1, got {a.alphas!r}.")
        labels = {x.strip() for x in a.labels.split(",") if x.strip()}
        cfg = resume_config(a.folder)
        specs = [s for s in plan_runs(cfg) if s.label in labels]
        if not specs:
            raise DBAError(f"No run labelled {', '.join(sorted(labels))} in {a.folder}.")
        for s in specs:
            if not (s.run_dir / "status.json").exists():
                raise DBAError(f"{s.run_dir} has not finished; finish the comparison first (dba compare --resume).")
            print(f"[wiseft] {s.domain}/{s.label} seed {s.seed}: α = {', '.join(f'{x:g}' for x in alphas)}", flush=True)
            recs = score_wiseft_of_folder(s.run_dir, load_eval_sets(s.config), s.config, alphas,
                                          device=s.config.device)
            for r in recs:
                print(f"[wiseft]   α {r['alpha']:g}: S_D {100 * r['s_d']:.1f}, S_G {100 * r['s_g']:.1f}, "
                      f"{r['seconds']:.0f} s", flush=True)
        compare(cfg, resume=True)  # every run is kept: only the tables, cost and plots are rewritten
    except DBAError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
