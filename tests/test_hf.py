"""dba.hf: DBA in the Hugging Face Trainer — the step-count guard, DBA's values in the logs and in report_to
integrations, and the TRL SFTTrainer example (skipped when trl is not installed)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from dba import LoraSettings, load_model
from dba.config import AnnealConfig, BoostConfig, DBAConfig
from dba.data import Example, collate, load_corpus
from dba.global_gradient import estimate_global_gradient
from dba.hf import DBACallback, DBATrainer, TrainerMismatchError, attach
from dba.optim import DBAOptimizer, annealed_lr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def setup(tmp_path):
    rows = [{"instruction": f"What is {a} plus {b}?", "output": f"{a + b}."} for a in range(1, 5) for b in (1, 2)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8), device="cpu")
    corpus = load_corpus(tmp_path / "d.jsonl", lm.tokenizer, 96)
    assert len(corpus) == 8
    anchor = estimate_global_gradient(lm.model, [collate(corpus.examples[i:i + 4], lm.tokenizer.pad_token_id)
                                                 for i in (0, 4)], progress=False)
    data = [{"input_ids": e.input_ids, "labels": e.labels} for e in corpus.examples]

    def collator(feats):
        return collate([Example(f["input_ids"], f["labels"]) for f in feats], lm.tokenizer.pad_token_id)

    def make(T, *, trainer_cls=Trainer, scheduler=True, callbacks=None, **args):
        opt = DBAOptimizer(lm.model, anchor, DBAConfig(total_steps=T, boost=BoostConfig(k0=0.3),
                                                      anneal=AnnealConfig(lr=1e-3)))
        records = []
        opt.add_callback(records.append)
        kw = dict(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=1, report_to=[], logging_steps=1,
                  save_strategy="no", use_cpu=True, remove_unused_columns=False, seed=0, disable_tqdm=True)
        kw.update(args)
        trainer = trainer_cls(model=lm.model, args=TrainingArguments(**kw), train_dataset=data,
                              data_collator=collator, callbacks=callbacks,
                              optimizers=(opt, opt.scheduler() if scheduler else None))
        return trainer, opt, records

    return make


def test_steps_other_than_total_steps_are_refused_before_any_step(setup):
    # the case that ran silently before: T = 3, one epoch of 8 batches -> steps 3..7 at lr 0.0
    trainer, opt, records = setup(3, trainer_cls=DBATrainer, num_train_epochs=1)
    with pytest.raises(TrainerMismatchError) as e:
        trainer.train()
    msg = str(e.value)
    assert "will run 8 optimiser steps (num_train_epochs=1" in msg and "total_steps = 3" in msg
    assert "steps 3..7" in msg and "max_steps=3" in msg
    assert opt.t == 0 and records == [], "a step was taken before the refusal"
    # too few steps is refused too
    trainer, opt, _ = setup(5, trainer_cls=DBATrainer, max_steps=2)
    with pytest.raises(TrainerMismatchError, match="stop before the schedule ends"):
        trainer.train()
    # the Trainer's own scheduler would be logged as the learning rate
    trainer, opt, _ = setup(3, trainer_cls=DBATrainer, max_steps=3, scheduler=False)
    with pytest.raises(TrainerMismatchError, match="opt.scheduler()"):
        trainer.train()


def test_an_optimiser_reused_for_a_second_run_is_refused(setup):
    trainer, opt, _ = setup(2, trainer_cls=DBATrainer, max_steps=2)
    trainer.train()
    assert opt.t == 2
    again = DBATrainer(model=trainer.model, args=trainer.args, train_dataset=trainer.train_dataset,
                       data_collator=trainer.data_collator, optimizers=(opt, opt.scheduler()))
    with pytest.raises(TrainerMismatchError, match="has taken 2 steps"):
        again.train()


class Recorder(TrainerCallback):
    """Stands in for a report_to integration (TensorBoard, W&B ...): what its on_log receives."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


def test_rho_gamma_lambda_reach_the_log_history_and_report_to(setup):
    T = 3
    rec = Recorder()
    trainer, opt, records = setup(T, max_steps=T, gradient_accumulation_steps=2, max_grad_norm=1.0,
                                  callbacks=[rec])
    cb = attach(trainer)
    assert trainer.callback_handler.callbacks[0] is cb  # before every integration
    assert attach(trainer) is not cb  # attaching twice replaces, never duplicates
    assert sum(isinstance(c, DBACallback) for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    assert [r["step"] for r in records] == [0, 1, 2]
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == T
    for h, r in zip(logged, records):
        assert h["dba/rho"] == r["rho"] and h["dba/gamma"] == r["gamma"] and h["dba/lambda"] == r["lam"]
        assert h["dba/anchor_norm"] == r["anchor_norm"] > 0 and h["dba/grad_norm"] == r["grad_norm"]
        assert h["dba/lr"] == pytest.approx(annealed_lr(r["step"], T, opt.config.anneal))
        assert h["learning_rate"] == pytest.approx(r["effective_lr"])  # the Trainer's lr is DBA's lr_t·λ_t
        assert -1 <= h["dba/rho"] <= 1 and h["dba/lambda"] >= 1
    seen = [s for s in rec.seen if "loss" in s]
    assert [s["dba/rho"] for s in seen] == [h["dba/rho"] for h in logged]  # an integration sees them too
    assert "dba/rho" not in trainer.state.log_history[-1]  # the end-of-training summary is left alone


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_report_to_tensorboard_writes_dba_scalars(setup, tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer, _, _ = setup(2, trainer_cls=DBATrainer, max_steps=2, report_to=["tensorboard"])
    trainer.train()
    acc = EventAccumulator(str(next((tmp_path / "tb").rglob("events.out.tfevents*")).parent))
    acc.Reload()
    assert {"train/dba/rho", "train/dba/gamma", "train/dba/lambda"} <= set(acc.Tags()["scalars"])


@pytest.mark.skipif(importlib.util.find_spec("trl") is None or importlib.util.find_spec("datasets") is None,
                    reason="trl (the optional extra dba-studio[trl]) is not installed")
def test_trl_sft_trainer_example(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    sys.modules.pop("trl_sft_dba", None)
    import trl_sft_dba

    trainer, opt = trl_sft_dba.build(["--model", "tiny", "--steps", "3", "--batch-size", "2", "--anchor-batches", "2",
                                      "--max-length", "128", "-o", str(tmp_path / "out")])
    assert type(trainer).__name__ == "SFTTrainer" and isinstance(trainer.callback_handler.callbacks[0], DBACallback)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "dba/rho" in h]
    assert [h["step"] for h in logged] == [1, 2, 3] and opt.t == 3
    assert all(h["learning_rate"] == pytest.approx(h["dba/lr"] * h["dba/lambda"]) for h in logged)
    # the same guard under TRL: an epoch-based SFTConfig with T = 3 is refused
    bad, _ = trl_sft_dba.build(["--model", "tiny", "--steps", "3", "--batch-size", "2", "--anchor-batches", "2",
                                "--max-length", "128", "-o", str(tmp_path / "out2")])
    bad.args.max_steps = 5
    with pytest.raises(TrainerMismatchError, match="will run 5 optimiser steps"):
        bad.train()
