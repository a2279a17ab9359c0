"""dba.tracking and ``dba train --report-to``: records forwarded to a tracker, metrics.jsonl kept, clear errors."""
from __future__ import annotations

import importlib.util
import json

import pytest

import dba.tracking as tracking
from dba.errors import DBAError
from dba.io import read_jsonl
from dba.tracking import Tracker, open_tracker, record_scalars


def test_records_become_scalars_at_the_trainer_step():
    step = {"type": "step", "step": 0, "loss": 2.5, "rho": -0.2, "gamma": 0.1, "lam": 1.6, "lr": 3e-4,
            "skipped": False, "note": "text is not logged", "grad_norm": float("nan")}
    assert record_scalars(step) == (1, {"train/loss": 2.5, "train/rho": -0.2, "train/gamma": 0.1, "train/lam": 1.6,
                                        "train/lr": 3e-4, "train/skipped": 0.0})
    ev = {"type": "eval", "step": 0, "s_g": 0.6, "s_d": 0.3, "s": 0.4, "detail": {"general": {}},
          "ci": {"s_g": [0.5, 0.7], "s": None}}
    assert record_scalars(ev) == (0, {"eval/s_g": 0.6, "eval/s_d": 0.3, "eval/s": 0.4, "eval/s_g_lo": 0.5,
                                      "eval/s_g_hi": 0.7})
    assert record_scalars({"type": "phase", "phase": "load"}) is None


def test_unknown_or_missing_backends_are_one_clear_message(tmp_path, monkeypatch):
    with pytest.raises(DBAError, match="Unknown --report-to 'comet'"):
        open_tracker("comet", tmp_path)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(DBAError) as e:
        open_tracker("wandb", tmp_path / "run")
    assert "pip install wandb" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything is written
    assert type(open_tracker("none", tmp_path)) is Tracker


class Broken(Tracker):
    name = "broken"

    def _log(self, step, values):
        raise ConnectionError("server went away")


def test_a_failing_tracker_warns_once_and_the_run_goes_on():
    t = Broken()
    with pytest.warns(UserWarning, match="tracking is off"):
        t.log({"type": "step", "step": 0, "loss": 1.0})
    t.log({"type": "step", "step": 1, "loss": 1.0})  # silent now
    assert t.broken


class Recording(Tracker):
    name = "recording"
    instances: list = []

    def __init__(self, run_dir, config, run_name):
        super().__init__()
        self.logged, self.closed, self.config = [], None, config
        Recording.instances.append(self)

    def _log(self, step, values):
        self.logged.append((step, values))

    def _close(self, status):
        self.closed = status


def _data(tmp_path):
    rows = [{"instruction": f"What is {a} plus 1?", "output": f"{a + 1}."} for a in range(6)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "mc.jsonl").write_text(json.dumps({"question": "1+1?", "choices": ["2", "3"], "answer": 0}) + "\n")
    return ["train", "--method", "direct", "--model", "tiny", "--lora-rank", "2", "--domain", str(tmp_path / "d.jsonl"),
            "--domain-eval", str(tmp_path / "mc.jsonl"), "--general-eval", str(tmp_path / "mc.jsonl"),
            "--steps", "2", "--batch-size", "2", "--max-length", "96", "--eval-items", "1"]


def test_cli_report_to_forwards_every_step_and_eval_record(tmp_path, monkeypatch):
    from dba.cli import main

    monkeypatch.setitem(tracking._PACKAGE, "mlflow", ("json", "json"))  # any importable module
    monkeypatch.setitem(tracking._CLASSES, "mlflow", Recording)
    Recording.instances.clear()
    assert main(_data(tmp_path) + ["-o", str(tmp_path / "run"), "--report-to", "mlflow"]) == 0
    t, = Recording.instances
    assert t.closed == "completed" and t.config["method"] == "direct"
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")  # always written
    expected = [record_scalars(m) for m in metrics if m["type"] in ("step", "eval")]
    assert t.logged == expected
    assert [s for s, v in t.logged] == [0, 1, 2, 2]  # base eval, steps 1 and 2, final eval
    assert "train/rho" in t.logged[1][1] and "eval/s_d" in t.logged[-1][1]


def test_cli_report_to_a_missing_package_exits_2_before_the_run(tmp_path, monkeypatch, capsys):
    from dba.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    assert main(_data(tmp_path) + ["-o", str(tmp_path / "run"), "--report-to", "trackio"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install trackio" in err
    assert not (tmp_path / "run" / "status.json").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_cli_report_to_tensorboard_writes_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dba.cli import main

    assert main(_data(tmp_path) + ["-o", str(tmp_path / "run"), "--report-to", "tensorboard"]) == 0
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/rho")] == [1, 2]
    assert [e.step for e in acc.Scalars("eval/s_g")] == [0, 2]
    assert (tmp_path / "run" / "metrics.jsonl").exists()
