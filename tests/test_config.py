"""dba.config: one source of truth. Presets built through the CLI parser and through compare agree; validation
refuses bad numbers with one line; configs round-trip through JSON (old compare.json layouts too); library modules
never import the CLI."""
import ast
import json
import math
from pathlib import Path

import pytest

from dba.cli import build_parser, main as cli_main
from dba.cli import anchor as anchor_cmd
from dba.cli import compare as compare_cmd
from dba.cli import train as train_cmd
from dba.compare import plan_runs
from dba.config import (PRESET_NAMES, AnchorConfig, AnnealConfig, BoostConfig, CompareConfig, CorrectionConfig,
                        DBAConfig, FinetuneConfig, LoraSettings, field_help, from_dict, preset, to_dict)
from dba.errors import DBAError

DBA_DIR = Path(__file__).resolve().parents[1] / "dba"


def _train(argv):
    return train_cmd.config_from_args(build_parser().parse_args(["train", *argv]))


def _compare(argv):
    return compare_cmd.config_from_args(build_parser().parse_args(["compare", *argv]))


def _anchor(argv):
    return anchor_cmd.config_from_args(build_parser().parse_args(["anchor", *argv]))


SHARED = ("model", "quantization", "lora", "steps", "batch_size", "max_length", "anchor_batches", "anchor_energy",
          "eval_items", "eval_every", "eval_scorer", "seed", "dba")


@pytest.mark.parametrize("name", ["quick", "lesson", "smoke", "study", "full"])
def test_a_preset_is_the_same_through_train_compare_and_the_library(name):
    lib = preset(name).run.resolved()
    via_train = _train(["--preset", name]).resolved()
    via_compare = _compare(["--preset", name]).run.resolved()
    via_preset_compare = preset(name).compare_config().run.resolved()
    for k in SHARED:
        assert getattr(via_train, k) == getattr(lib, k) == getattr(via_compare, k) == getattr(via_preset_compare, k), k
    # and every run compare plans from it carries the same settings
    for spec in plan_runs(_compare(["--preset", name, "-o", "/tmp/x"])):
        for k in ("model", "lora", "steps", "batch_size", "anchor_batches", "eval_items"):
            assert getattr(spec.config, k) == getattr(lib, k), (spec.label, k)
        assert spec.config.dba.anneal.lr == lib.dba.anneal.lr


def test_quick_flag_is_the_quick_preset_everywhere():
    q = preset("quick").run
    assert q.lora.rank == 8 and q.lora.effective_alpha == 16 and q.steps == 16 and q.batch_size == 8
    assert q.anchor_batches == 8 and q.eval_items == 20 and q.model == "default"
    assert _train(["--quick"]).lora.rank == 8  # `dba train --quick` applies the quick LoRA rank (it did not)
    assert _train(["--quick", "-o", "r"]).resolved().to_dict() == _train(["--preset", "quick", "-o", "r"]).resolved().to_dict()
    run, anchor = _anchor(["--quick"])
    assert anchor.batches == 8 and run.lora.rank == 8
    assert _train(["--quick", "--lora-rank", "4", "--steps", "2"]).lora.rank == 4  # options win over the preset
    with pytest.raises(DBAError, match="disagree"):
        _train(["--quick", "--preset", "full"])


def test_print_config_of_train_and_compare_agree(capsys):
    assert cli_main(["train", "--quick", "--print-config"]) == 0
    t = json.loads(capsys.readouterr().out)
    assert cli_main(["compare", "--quick", "--print-config"]) == 0
    c = json.loads(capsys.readouterr().out)
    r = c["run"]
    for k in ("model", "lora", "steps", "batch_size", "anchor_batches", "eval_items"):
        assert t[k] == r[k], k
    assert t["lora"]["rank"] == 8 and t["lora"]["alpha"] == 16.0
    assert t["dba"]["anneal"]["lr"] == r["dba"]["anneal"]["lr"] == AnnealConfig().lr
    assert t["dba"]["total_steps"] == t["steps"] == 16
    assert len(c["planned_runs"]) == 12  # direct, 5 ratios, dba, 3 ablations, 2 variants
    assert cli_main(["anchor", "--quick", "--print-config"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert a["anchor"]["batches"] == t["anchor_batches"] and a["lora"] == t["lora"] and a["model"] == t["model"]


def test_a_direct_run_records_what_ran(capsys):
    assert cli_main(["train", "--method", "direct", "--steps", "3", "--print-config"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["dba"]["total_steps"] == 3 and d["dba"]["boost"]["enabled"] is False
    assert d["dba"]["correction"]["enabled"] is False


def test_argparse_defaults_and_help_come_from_the_dataclasses():
    args = build_parser().parse_args(["train"])
    assert args.steps is None and args.lr is None  # "not given": the config's default applies
    cfg = _train([])
    assert cfg.steps == FinetuneConfig().steps and cfg.dba.anneal.lr == AnnealConfig().lr
    assert cfg.lora.rank == LoraSettings().rank and cfg.anchor_batches == FinetuneConfig().anchor_batches
    helps = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert field_help(FinetuneConfig)["steps"] in helps["steps"] and f"default: {FinetuneConfig().steps}" in helps[
        "steps"]
    assert field_help(AnnealConfig)["lr"].split(".")[0] in helps["lr"]
    run, anchor = _anchor([])
    assert anchor.batches == FinetuneConfig().anchor_batches  # one default anchor size (it was 32 / 16 / 8)


def test_lora_alpha_none_means_twice_the_rank_in_one_place():
    assert LoraSettings(rank=8).effective_alpha == 16 and LoraSettings(rank=8, alpha=4).effective_alpha == 4
    assert LoraSettings(rank=8).scale == 2.0
    r = FinetuneConfig(lora=LoraSettings(rank=4)).resolved()
    assert r.lora.alpha == 8.0 and r.resolved() == r  # resolving twice changes nothing
    assert _train(["--lora-rank", "0"]).lora is None
    with pytest.raises(DBAError, match="full fine-tuning"):
        _train(["--lora-rank", "0", "--lora-alpha", "4"])


def test_direct_uses_the_same_lr_default():
    assert DBAConfig.direct(10).anneal.lr == AnnealConfig().lr


@pytest.mark.parametrize("kw, msg", [
    (dict(steps=0), "steps must be at least 1"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(batch_size=-2), "batch_size must be at least 1"),
    (dict(eval_items=-1), "eval_items"),
    (dict(steps=2.5), "whole number"),
    (dict(grad_accum=0), "grad_accum"),
    (dict(mixture_ratio=1.5), "mixture_ratio"),
    (dict(eval_scorer="best"), "eval_scorer"),
    (dict(dba=DBAConfig(anneal=AnnealConfig(lr=float("nan")))), "finite"),
    (dict(dba=DBAConfig(anneal=AnnealConfig(lr=0.0))), "greater than 0"),
    (dict(dba=DBAConfig(anneal=AnnealConfig(lr=-1e-3))), "greater than 0"),
    (dict(dba=DBAConfig(boost=BoostConfig(k0_max=0.0))), "k0_max"),
    (dict(dba=DBAConfig(boost=BoostConfig(k0=1.5))), "k_0"),
    (dict(dba=DBAConfig(correction=CorrectionConfig(lam_min=3.0, lam_max=2.0))), "lam_min"),
    (dict(lora=None, quantization="4bit"), "needs LoRA"),
    (dict(lora=LoraSettings(rank=4)), None),
])
def test_validation_refuses_bad_numbers_with_one_line(kw, msg):
    if msg is None:
        FinetuneConfig(**kw)
        return
    with pytest.raises(DBAError, match=msg) as e:
        FinetuneConfig(**kw)
    assert "\n" not in str(e.value)


def test_zero_means_all_or_none_where_documented():
    assert FinetuneConfig(eval_items=0).eval_items is None
    assert FinetuneConfig(max_grad_norm=0).max_grad_norm is None
    with pytest.raises(DBAError):
        LoraSettings(rank=0)
    with pytest.raises(DBAError):
        AnchorConfig(batches=0)
    with pytest.raises(DBAError, match="Mixture ratio"):
        CompareConfig(ratios=[1.0])


@pytest.mark.parametrize("argv, msg", [
    (["train", "--batch-size", "0"], "batch_size must be at least 1"),
    (["train", "--lr", "nan"], "finite"),
    (["train", "--eval-items", "-3"], "eval_items"),
    (["compare", "--steps", "0"], "steps must be at least 1"),
    (["anchor", "--batches", "0"], "anchor batches"),
])
def test_cli_refuses_bad_numbers_exit_2(argv, msg, capsys):
    assert cli_main([*argv, "--print-config"]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_round_trip_through_json():
    cfgs = [FinetuneConfig(), preset("lesson").run, preset("quick").run.resolved(),
            FinetuneConfig(lora=LoraSettings(rank=4, alpha=2.0, target_modules=["q_proj", "v_proj"]),
                           dba=DBAConfig(betas=(0.8, 0.99), boost=BoostConfig(k0=0.2)))]
    for c in cfgs:
        back = FinetuneConfig.from_dict(json.loads(json.dumps(c.to_dict())))
        assert back == c and isinstance(back.dba.betas, tuple)
    cc = preset("smoke").compare_config(domains=["finance", "law"], methods=["direct", "dba"], output_dir="x")
    assert CompareConfig.from_dict(json.loads(json.dumps(cc.to_dict()))) == cc
    a = AnchorConfig(rank=3, energy=None)
    assert from_dict(AnchorConfig, to_dict(a)) == a
    with pytest.raises(DBAError, match="Unknown FinetuneConfig fields: bogus"):
        FinetuneConfig.from_dict({"bogus": 1})


def test_old_flat_compare_json_still_reads():
    """compare.json written before the comparison held a run config: its run fields were flat."""
    old = {"model": "tiny", "quantization": "none", "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0,
           "target_modules": "all-linear"}, "domains": ["finance"], "general": "general", "general_eval": None,
           "domain_eval": None, "methods": ["direct", "dba"], "ratios": [0.25], "steps": 3, "batch_size": 4,
           "grad_accum": 1, "max_length": 48, "max_grad_norm": 1.0, "seed": 0, "dba": DBAConfig().to_dict(),
           "anchor": None, "anchor_batches": 2, "anchor_energy": 0.9, "eval_every": 0, "eval_items": 3,
           "eval_scorer": "mean", "output_dir": "runs/x", "device": "auto", "dtype": None,
           "trust_remote_code": False}
    cfg = CompareConfig.from_dict(old)
    assert cfg.run.model == "tiny" and cfg.run.steps == 3 and cfg.run.lora.rank == 4 and cfg.output_dir == "runs/x"
    assert cfg.steps == 3  # the run's fields read through the comparison
    cfg.steps = 5
    assert cfg.run.steps == 5


def test_presets_are_fresh_and_documented():
    assert set(PRESET_NAMES) >= {"smoke", "quick", "lesson", "study", "full"}
    a = preset("quick")
    a.run.steps = 999
    assert preset("quick").run.steps == 16
    for name in ("lesson", "study"):
        p = preset(name)
        assert p.run.lora is None and p.run.dba.anneal.lr == 1e-3
    assert preset("study").confirmed  # measured over 3 seeds (docs/defaults.md)
    assert not preset("lesson").confirmed  # one seed so far
    assert preset("lesson").run.steps * 3.0 <= 90  # the lesson's budget at the measured 3.0 s per step (idle)
    assert preset("smoke").run.model == "tiny"
    with pytest.raises(DBAError, match="Unknown preset"):
        preset("huge")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = ".".join(path.relative_to(DBA_DIR.parent).with_suffix("").parts[:-1])
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out += [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (n.level - 1)]
                mod = ".".join(base + ([n.module] if n.module else []))
                out += [mod] + [f"{mod}.{a.name}" for a in n.names]
            else:
                out += [n.module] + [f"{n.module}.{a.name}" for a in n.names]
    return out


def test_library_modules_never_import_the_cli_nor_dodge_cycles():
    for path in DBA_DIR.rglob("*.py"):
        src = path.read_text(encoding="utf-8")
        assert "__import__(" not in src and "import_module(" not in src, path
        if "cli" in path.relative_to(DBA_DIR).parts or path.name == "__main__.py":  # the CLI and `python -m dba`
            continue
        bad = [m for m in _imports(path) if m == "dba.cli" or m.startswith("dba.cli.")]
        assert not bad, f"{path} imports the CLI: {bad}"


def test_config_module_imports_nothing_heavy():
    mods = _imports(DBA_DIR / "config.py")
    assert not [m for m in mods if m.split(".")[0] in ("torch", "transformers", "peft", "numpy")]
    assert not [m for m in mods if m.startswith("dba.") and m not in ("dba.errors", "dba.errors.DBAError")]
    assert math.isclose(FinetuneConfig().dba.anneal.lr, AnnealConfig().lr)


def test_old_run_config_json_still_reads():
    """config.json written by earlier versions (no penalty / clip / budget fields, alpha as a number) resumes."""
    old = {"method": "direct", "model": "tiny", "quantization": "none",
           "lora": {"rank": 4, "alpha": 32.0, "dropout": 0.0, "target_modules": "all-linear"},
           "domain": "finance", "general": "general", "domain_eval": None, "general_eval": None, "anchor": None,
           "anchor_batches": 16, "anchor_energy": 0.9, "mixture_ratio": 0.5, "steps": 3, "batch_size": 8,
           "grad_accum": 1, "max_length": 256, "max_grad_norm": 1.0, "seed": 0,
           "dba": {"total_steps": 100, "boost": {"enabled": True, "mode": "convex", "c": 200.0, "k0_max": 0.1,
                                                 "k0": None, "decay": "linear", "scale": "raw"},
                   "correction": {"enabled": True, "similarity": "cosine", "function": "paper", "beta": 1.0,
                                  "lam_min": 0.5, "lam_max": 2.0},
                   "anneal": {"lr": 0.0003, "enabled": True, "schedule": "cosine", "warmup_steps": 0,
                              "min_lr_ratio": 0.0},
                   "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0, "max_nonfinite_in_a_row": 5},
           "eval_every": 0, "eval_items": None, "eval_scorer": "mean", "evaluate_at_end": True,
           "checkpoint_every": 0, "output_dir": "runs/run", "device": "auto", "dtype": None,
           "trust_remote_code": False}
    cfg = FinetuneConfig.from_dict(old)
    assert cfg.lora.alpha == 32.0 and cfg.dba.betas == (0.9, 0.999)
    r = cfg.resolved()  # what the run did: T = 3, no boost or correction for direct
    assert r.dba.total_steps == 3 and not r.dba.boost.enabled and not r.dba.correction.enabled
