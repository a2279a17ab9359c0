"""``dba compare``: the forgetting experiment — direct, a mixture ratio sweep, DBA, its ablations and variants (the
methods of :data:`dba.methods.METHODS`), on the same base model, domain data, seed and budget, all DBA runs sharing
ONE global gradient ĝ_G estimated once.

Rooms: :mod:`.plan` (which runs, each one's config), :mod:`.run` (:func:`compare` runs them), :mod:`.posthoc`
(WiSE-FT points of finished runs), :mod:`.rows` (results rows with intervals), :mod:`.report` (cost.json,
results.csv, plots, summary.md). :func:`compare` writes an output folder:

- ``anchor.safetensors``   — ĝ_G, estimated once at the start (or the file given as ``run.anchor``) and passed,
  loaded, to every run that needs it (``finetune(..., anchor=g)``), for every domain;
- ``base.json``            — the base model's scores, measured ONCE per domain (general set once);
- ``runs/<label>/``        — one run folder per run (``runs/<domain>/<label>/`` when several domains are compared,
  ``.../<label>/seed-<k>/`` with ``seeds`` > 1: every method runs with seeds run.seed, run.seed + 1, ...),
  written by :func:`dba.train.finetune`; the shared base evaluation is written into each run's ``metrics.jsonl``
  as its step-0 record (marked ``"shared": true``) and the final evaluation as its last record, so each folder
  reads like a stand-alone run;
- ``wiseft.json`` in a run folder — its WiSE-FT points (``CompareConfig.wiseft``: the run interpolated with the base
  at each α, scored; no training), see :mod:`.posthoc`;
- ``results.csv``          — one row per run (per seed) plus a ``base`` row per domain, a pooled row per method with
  several seeds and a ``<label>+wiseft-<α>`` row per WiSE-FT point; every score and every difference (vs base, vs
  direct) with its 95 % interval (see :data:`RESULT_COLUMNS`, :mod:`.rows`), and the held-out answer NLL per token
  (``nll_g``, ``nll_d``, and ``d_nll_*`` vs base) when the comparison has held-out pairs (``run.general_heldout`` /
  ``run.domain_heldout``; by default the bundled ``heldout_pairs.jsonl`` of a bundled corpus);
- ``cost.json``            — the cost accounting (see :func:`cost_accounting`);
- ``<domain>_*.png``, ``anchor_spectrum.png`` — plots from :mod:`dba.plots`, with intervals (bands, whiskers), among
  them ``<domain>_forgetting_plane.png`` (:func:`dba.plots.forgetting_plane`) and ``<domain>_nll_over_steps.png``
  (:func:`dba.plots.nll_over_steps`, with held-out pairs);
- ``summary.md``           — the results tables (and the held-out NLL table) with intervals ("within noise" where a difference's interval
  contains 0) and the cost lines (per seed and in total);
- ``compare.json``         — the :class:`~dba.config.CompareConfig` and the run list (for ``resume``:
  :func:`resume_config` reads it back with ``output_dir`` = the folder itself, so a copied folder resumes the copy).

The configs (:class:`~dba.config.CompareConfig`, the ``quick`` preset ...) live in :mod:`dba.config`; the command
line in :mod:`dba.cli.compare`.
"""
from ..config import DEFAULT_RATIOS, CompareConfig, preset
from ..runs import load_runs
from .plan import DBA_FAMILY, DEFAULT_METHODS, METHODS, RunSpec, domain_key, plan_runs, selected_methods, validate
from .report import RESULT_COLUMNS, cost_accounting, cost_lines, results_csv, run_cost
from .run import CompareResult, compare, resume_config


def _quick_dict() -> dict:
    run = preset("quick").run
    return {"steps": run.steps, "batch_size": run.batch_size, "eval_items": run.eval_items,
            "eval_every": run.eval_every, "anchor_batches": run.anchor_batches, "lora_rank": run.lora.rank}


QUICK = _quick_dict()
"""Read-only summary of ``dba.config.preset("quick")`` for older notebooks; build configs with
``preset("quick").compare_config(...)`` instead."""

__all__ = ["CompareConfig", "CompareResult", "DBA_FAMILY", "DEFAULT_METHODS", "DEFAULT_RATIOS", "METHODS", "QUICK", "RESULT_COLUMNS",
           "RunSpec", "compare", "cost_accounting", "cost_lines", "domain_key", "load_runs", "plan_runs",
           "results_csv", "resume_config", "run_cost", "selected_methods", "validate"]
