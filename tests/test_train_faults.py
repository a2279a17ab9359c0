"""Runs that survive faults: Ctrl-C / SIGTERM / kill -9 of a real process then ``--resume`` equals an uninterrupted run
(bit for bit), a full disk (a real small tmpfs where the machine allows mounting one, else simulated), the collapse
guard, resuming a copied folder, refusing to resume a completed run, tokens and times adding up, and the data-file
messages (duplicate choices, a missing path)."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dba import LoraSettings
from dba.cli import main as cli_main
from dba.data import load_mc, resolve_corpus
from dba.errors import DataError, DBAError, DiskFullError, DivergedError
from dba.io import atomic_dir, recover_dir
from dba.optim import AnnealConfig, BoostConfig, DBAConfig
from dba.train import (CollapseGuard, FinetuneConfig, _proc_start, finetune, read_run, resume_config,
                       weight_norm)

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------- fixtures


def _write_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."}
            for a in range(1, 5) for b in range(1, 4)]
    (d / "dom.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gen = [{"instruction": f"Name a colour number {i}.", "output": "Blue."} for i in range(8)]
    (d / "gen.jsonl").write_text("\n".join(json.dumps(r) for r in gen) + "\n")
    mc = [{"question": f"What is {a} plus 1?", "choices": [str(a + 1), str(a + 7)], "answer": 0} for a in range(3)]
    (d / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in mc) + "\n")
    return d


@pytest.fixture()
def small_corpus(tmp_path):
    return _write_corpus(tmp_path / "data")


def tiny_cfg(d, out, **kw):
    base = dict(method="dba", model="tiny", lora=LoraSettings(rank=4, alpha=8), domain=str(d / "dom.jsonl"),
                general=str(d / "gen.jsonl"), domain_eval=str(d / "mc.jsonl"), general_eval=str(d / "mc.jsonl"),
                steps=6, batch_size=3, anchor_batches=2, max_length=64, evaluate_at_end=False,
                dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=5e-3)), output_dir=str(out))
    base.update(kw)
    return FinetuneConfig(**base)


STEPS = 12


def cli_args(d: Path, out: Path, *extra: str) -> list[str]:
    """A short ``dba train`` on the tiny model, scored at start and end (2 items), as the CLI builds it."""
    return ["train", "--method", "dba", "--model", "tiny", "--lora-rank", "4", "--domain", str(d / "dom.jsonl"),
            "--general", str(d / "gen.jsonl"), "--domain-eval", str(d / "mc.jsonl"), "--general-eval",
            str(d / "mc.jsonl"), "--steps", str(STEPS), "--batch-size", "3", "--anchor-batches", "2",
            "--max-length", "64", "--eval-items", "2", "--lr", "5e-3", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory):
    """The uninterrupted CLI run every interrupted one must equal."""
    base = tmp_path_factory.mktemp("faults")
    d = _write_corpus(base / "data")
    assert cli_main(cli_args(d, base / "reference")) == 0
    return d, base / "reference"


# The real CLI in a child process, its optimiser step slowed down so a signal lands mid-run (nothing else changes).
CHILD = r"""
import sys, time
import torch
torch.set_num_threads(1)
import dba.optim
_step = dba.optim.DBAOptimizer.step
def slow_step(self, *a, **k):
    time.sleep(float(sys.argv[1]))
    return _step(self, *a, **k)
dba.optim.DBAOptimizer.step = slow_step
from dba.cli import main
sys.exit(main(sys.argv[2:]))
"""


def start_child(args: list[str], delay: float = 0.3) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(delay), *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def step_records(run_dir: Path) -> list[dict]:
    f = run_dir / "metrics.jsonl"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            m = json.loads(line)
        except json.JSONDecodeError:
            break
        if m.get("type") == "step":
            out.append(m)
    return out


def wait_for(pred, proc: subprocess.Popen, timeout: float = 180.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the child ended (rc {proc.returncode}) before the signal:\n{err[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for the child run")


def assert_same_run(a: Path, b: Path) -> None:
    """Same adapter bit for bit, same step records (but wall-clock times), same scores and tokens."""
    wa = load_file(str(a / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(b / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "resumed run differs from the uninterrupted one"
    ra, rb = read_run(a), read_run(b)

    def plain(metrics):
        return [{k: v for k, v in m.items() if k != "elapsed"} for m in metrics]

    sa = plain(m for m in ra["metrics"] if m["type"] == "step")
    sb = plain(m for m in rb["metrics"] if m["type"] == "step")
    assert [m["step"] for m in sb] == list(range(len(sa)))
    assert sa == sb
    ea = [(m["step"], m["s_g"], m["s_d"]) for m in ra["metrics"] if m["type"] == "eval"]
    eb = [(m["step"], m["s_g"], m["s_d"]) for m in rb["metrics"] if m["type"] == "eval"]
    assert ea == eb
    assert ra["status"]["tokens"] == rb["status"]["tokens"], "tokens double-counted across the resume"
    assert ra["status"]["scores"] == rb["status"]["scores"]
    assert not (b / "checkpoint").exists(), "a completed run keeps no checkpoint"


# ---------------------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_stops_with_checkpoint_and_resume_equals_uninterrupted(cli_reference, tmp_path, capsys, sig):
    d, ref = cli_reference
    out = tmp_path / "cut"
    proc = start_child(cli_args(d, out))
    wait_for(lambda: len(step_records(out)) >= 3, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    assert f"interrupted: stopped by {sig.name} before step" in err and f"--resume {out}" in err
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "interrupted" and 3 <= st["step"] < STEPS
    ck = json.loads((out / "checkpoint" / "state.json").read_text())
    assert ck["step"] == st["step"] and st["checkpoint_step"] == st["step"]
    wall_before = st["wall_seconds"]

    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out)]) == 0
    assert "status: completed" in capsys.readouterr().out
    assert_same_run(ref, out)
    st = json.loads((out / "status.json").read_text())
    assert st["sessions"] == 2 and st["wall_seconds"] > wall_before, "times do not add up across the resume"


def test_kill9_leaves_running_then_resume_continues_from_the_last_checkpoint(cli_reference, tmp_path, capsys):
    d, ref = cli_reference
    out = tmp_path / "killed"
    proc = start_child(cli_args(d, out, "--checkpoint-every", "2"))
    wait_for(lambda: (out / "checkpoint" / "state.json").exists() and len(step_records(out)) >= 5, proc)
    proc.kill()
    proc.communicate(timeout=60)
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "running" and st["pid"] == proc.pid
    assert read_run(out)["status"]["status"] == "interrupted", "a killed run must not read as running forever"
    ck = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    assert ck % 2 == 0 and ck <= st["step"]

    capsys.readouterr()
    assert cli_main(["train", "--resume", str(out)]) == 0
    assert_same_run(ref, out)
    st2 = json.loads((out / "status.json").read_text())
    assert st2["status"] == "completed" and st2["sessions"] == 2 and st2["wall_seconds"] > st["wall_seconds"]


def test_resume_refuses_a_folder_whose_process_is_alive(small_corpus, tmp_path):
    cfg = tiny_cfg(small_corpus, tmp_path / "r", steps=1)
    finetune(cfg, cancel=lambda: True, progress=False)  # cancelled before its first step: resumable
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        f = tmp_path / "r" / "status.json"
        st = json.loads(f.read_text())
        st.update(status="running", pid=sleeper.pid, pid_start=_proc_start(sleeper.pid))
        f.write_text(json.dumps(st))
        with pytest.raises(DBAError, match="is still running"):
            finetune(cfg, resume=True, progress=False)
        assert read_run(tmp_path / "r")["status"]["status"] == "running"
        # the same pid number with another start time is another process: the run is stale
        st["pid_start"] = st["pid_start"] - 1
        f.write_text(json.dumps(st))
        assert read_run(tmp_path / "r")["status"]["status"] == "interrupted"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert finetune(cfg, resume=True, progress=False).status == "completed"


# ---------------------------------------------------------------------------------------------------- resume


def test_resume_of_a_copied_folder_resumes_the_copy(small_corpus, tmp_path, capsys):
    stop = threading.Event()
    cfg = tiny_cfg(small_corpus, tmp_path / "orig")
    r = finetune(cfg, cancel=stop, callback=lambda rec: rec.get("step") == 2 and stop.set(), progress=False)
    assert r.status == "cancelled"
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    assert cli_main(["train", "--resume", str(tmp_path / "copy")]) == 0
    assert json.loads((tmp_path / "copy" / "status.json").read_text())["status"] == "completed"
    assert (tmp_path / "copy" / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((tmp_path / "copy" / "config.json").read_text())["output_dir"] == str(tmp_path / "copy")
    # the original is untouched
    assert json.loads((tmp_path / "orig" / "status.json").read_text())["status"] == "cancelled"
    assert not (tmp_path / "orig" / "adapter").exists()
    assert resume_config(tmp_path / "orig").output_dir == str(tmp_path / "orig")


def test_resuming_a_completed_run_is_refused(small_corpus, tmp_path, capsys):
    cfg = tiny_cfg(small_corpus, tmp_path / "done", steps=2)
    finetune(cfg, progress=False)
    before = (tmp_path / "done" / "metrics.jsonl").read_text()
    with pytest.raises(DBAError, match="completed run .*nothing to resume"):
        finetune(cfg, resume=True, progress=False)
    capsys.readouterr()
    assert cli_main(["train", "--resume", str(tmp_path / "done")]) == 2
    err = capsys.readouterr().err
    assert "completed run" in err and "Traceback" not in err
    assert (tmp_path / "done" / "metrics.jsonl").read_text() == before, "a refused resume must not train again"
    assert cli_main(["train", "--resume", str(tmp_path / "no-such-run")]) == 2
    assert "not found" in capsys.readouterr().err


def test_tokens_and_times_add_up_across_resumes(small_corpus, tmp_path):
    full = finetune(tiny_cfg(small_corpus, tmp_path / "full"), progress=False)
    cfg = tiny_cfg(small_corpus, tmp_path / "cut")
    walls = []
    for stop_after in (1, 3):  # cancel twice, then finish: three sessions
        stop = threading.Event()
        r = finetune(cfg, resume=bool(walls), cancel=stop, progress=False,
                     callback=lambda rec, s=stop_after, e=stop: rec.get("step") == s and e.set())
        assert r.status == "cancelled"
        walls.append(json.loads((tmp_path / "cut" / "status.json").read_text())["wall_seconds"])
    done = finetune(cfg, resume=True, progress=False)
    a = json.loads((tmp_path / "full" / "status.json").read_text())
    b = json.loads((tmp_path / "cut" / "status.json").read_text())
    assert done.status == "completed" and b["sessions"] == 3
    assert b["tokens"] == a["tokens"] > 0
    assert [m["tokens"] for m in done.metrics if m["type"] == "step"] == \
        [m["tokens"] for m in full.metrics if m["type"] == "step"]
    assert walls[0] < walls[1] < b["wall_seconds"]
    assert b["train_seconds"] <= b["wall_seconds"] and b["device_seconds"] >= b["wall_seconds"] - 1e-6
    elapsed = [m["elapsed"] for m in done.metrics if m["type"] == "step"]
    assert elapsed == sorted(elapsed), "elapsed restarts at zero after a resume"


def test_resume_without_a_checkpoint_starts_again_from_step_0(small_corpus, tmp_path):
    """A run killed before its first checkpoint (here: during the anchor pass) resumes from scratch."""
    full = finetune(tiny_cfg(small_corpus, tmp_path / "full"), progress=False)
    cfg = tiny_cfg(small_corpus, tmp_path / "early")

    def boom(rec):
        if rec.get("phase") == "anchor":
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        finetune(cfg, callback=boom, progress=False)
    assert json.loads((tmp_path / "early" / "status.json").read_text())["status"] == "failed"
    done = finetune(cfg, resume=True, progress=False)
    assert done.status == "completed"
    assert_same_run(tmp_path / "full", tmp_path / "early")


# ---------------------------------------------------------------------------------------------------- disk full


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to the last byte."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            while True:
                try:
                    if os.write(fd, b"\0" * size) < size:
                        break
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return ballast


@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 16 MB tmpfs (root only; skipped where mounting is not allowed)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("needs Linux mount")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); test_disk_full_simulated covers the logic")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.parametrize("when", ["checkpoint", "result"])
def test_disk_full_on_a_real_tmpfs_keeps_the_last_checkpoint(small_corpus, tmp_path, small_tmpfs, when):
    full = finetune(tiny_cfg(small_corpus, tmp_path / "full"), progress=False)
    out = small_tmpfs / "run"
    cfg = tiny_cfg(small_corpus, out, checkpoint_every=2)
    ballast = []

    def fill_at(rec):
        if ballast:
            return
        if (when == "checkpoint" and rec.get("type") == "step" and rec["step"] == 3) or \
                (when == "result" and rec.get("phase") == "save"):
            ballast.append(_fill(small_tmpfs))

    with pytest.raises(DiskFullError) as e:
        finetune(cfg, callback=fill_at, progress=False)
    msg = str(e.value)
    assert "No space left on the device" in msg and f"--resume {out}" in msg
    kept = 2 if when == "checkpoint" else 6
    assert f"last checkpoint (step {kept}) is kept" in msg
    assert ("saving the checkpoint of step 4" if when == "checkpoint" else "saving the result") in msg
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "failed" and st["disk_full"] is True
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == kept
    assert not (out / "adapter").exists()
    assert not list(out.glob(".*tmp*")), "temp files left on the full disk"

    ballast[0].unlink()  # free the space, resume
    done = finetune(cfg, resume=True, progress=False)
    assert done.status == "completed"
    assert_same_run(tmp_path / "full", out)


def test_disk_full_simulated(small_corpus, tmp_path, monkeypatch, capsys):
    """The same as the tmpfs test where mounting is not allowed: saving the result raises ENOSPC once."""
    import dba.train as T

    real = T._save_result
    calls = []

    def full_once(out, lm):
        calls.append(1)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "adapter"))
        return real(out, lm)

    monkeypatch.setattr(T, "_save_result", full_once)
    cfg = tiny_cfg(small_corpus, tmp_path / "r")
    with pytest.raises(DiskFullError, match="last checkpoint \\(step 6\\) is kept"):
        finetune(cfg, progress=False)
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "failed"
    assert finetune(cfg, resume=True, progress=False).status == "completed"
    assert len(calls) == 2


def test_atomic_dir_keeps_the_old_folder_until_the_new_one_is_complete(tmp_path):
    final = tmp_path / "checkpoint"
    atomic_dir(final, lambda t: (t / "a").write_text("old"))

    def broken(t):
        (t / "a").write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_dir(final, broken)
    assert (final / "a").read_text() == "old" and not list(tmp_path.glob(".checkpoint.*"))
    # a process killed between the two renames of a replacement: the complete old copy comes back
    os.replace(final, tmp_path / ".checkpoint.old-12345")
    (tmp_path / ".checkpoint.tmp-abc").mkdir()
    assert recover_dir(final) and (final / "a").read_text() == "old"
    assert not list(tmp_path.glob(".checkpoint.*"))


# ---------------------------------------------------------------------------------------------------- collapse guard


def test_collapse_guard_stops_a_run_with_a_huge_learning_rate(small_corpus, tmp_path, capsys):
    cfg = tiny_cfg(small_corpus, tmp_path / "boom", steps=30,
                   dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=1e6)))
    with pytest.raises(DivergedError, match="Run diverged at step 1: the trainable weights' norm grew"):
        finetune(cfg, progress=False)
    st = json.loads((tmp_path / "boom" / "status.json").read_text())
    assert st["status"] == "diverged" and st["step"] == 1 and "η_0 = 1e+06" in st["error"]
    assert not (tmp_path / "boom" / "adapter").exists()
    with pytest.raises(DBAError, match="diverged"):
        finetune(cfg, resume=True, progress=False)
    # the CLI: one line, non-zero exit
    capsys.readouterr()
    rc = cli_main(cli_args(small_corpus, tmp_path / "x", "--lr", "1e6"))  # the last --lr wins
    err = capsys.readouterr().err
    assert rc == 2 and "Run diverged at step" in err and "Traceback" not in err
    assert json.loads((tmp_path / "x" / "status.json").read_text())["status"] == "diverged"


def test_collapse_guard_zero_gradients_when_weights_are_not_checked(small_corpus, tmp_path):
    """The issue's case (lr 1e6: gradients exactly 0, loss flat at 10.8) with the weight test off."""
    cfg = tiny_cfg(small_corpus, tmp_path / "flat", steps=30, guard_weight_growth=0, guard_window=5,
                   dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=1e6)))
    with pytest.raises(DivergedError, match="exactly (zero|[0-9.]+) for 5 steps in a row"):
        finetune(cfg, progress=False)
    st = json.loads((tmp_path / "flat" / "status.json").read_text())
    assert st["status"] == "diverged" and st["step"] < 30


def test_collapse_guard_can_be_turned_off(small_corpus, tmp_path):
    cfg = tiny_cfg(small_corpus, tmp_path / "off", steps=3, collapse_guard=False,
                   dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=1e6)))
    assert finetune(cfg, progress=False).status == "completed"


def _steps(losses, grads=None):
    grads = grads or [1.0] * len(losses)
    return [{"step": i, "loss": l, "grad_norm": g} for i, (l, g) in enumerate(zip(losses, grads))]


def _verdicts(guard, recs):
    return [guard.observe(r) for r in recs]


def test_collapse_guard_rules():
    # healthy: falling, noisy loss, non-zero gradients
    healthy = _steps([2.0 - 0.01 * i + (0.05 if i % 3 else -0.05) for i in range(100)])
    assert not any(_verdicts(CollapseGuard(window=10), healthy))
    # flat: the same float 10 times in a row (9 is fine)
    g = CollapseGuard(window=10)
    v = _verdicts(g, _steps([3.0, 2.5] + [10.8] * 10))
    assert v[:-1] == [None] * 11 and "stayed exactly 10.8 for 10 steps" in v[-1]
    # zero gradients
    g = CollapseGuard(window=4)
    v = _verdicts(g, _steps([3.0, 2.9, 2.8, 2.7, 2.6], [1.0, 0.0, 0.0, 0.0, 0.0]))
    assert v[:4] == [None] * 4 and "gradient was exactly zero for 4 steps" in v[4]
    # rising: the mean of the last window over 3x the first
    g = CollapseGuard(window=5, loss_rise=3.0)
    rising = _steps([1.0, 1.1, 0.9, 1.0, 1.0] + [2.0 + i for i in range(10)])
    v = _verdicts(g, rising)
    first = next(i for i, x in enumerate(v) if x)
    assert "mean loss of the last 5 steps" in v[first]
    assert sum(r["loss"] for r in rising[first - 4:first + 1]) / 5 > 3.0 >= \
        sum(r["loss"] for r in rising[first - 5:first]) / 5
    assert not any(_verdicts(CollapseGuard(window=5, loss_rise=0), rising)), "loss_rise=0 is off"
    # skipped steps (non-finite gradients) are left to the optimiser's own limit
    assert CollapseGuard(window=2).observe({"step": 0, "skipped": True, "loss": float("nan")}) is None
    # weights
    g = CollapseGuard(weight_growth=100.0, weight_norm0=2.0)
    assert g.check_weights(199.0) is None and "grew 101×" in g.check_weights(202.0)
    assert "NaN/inf" in g.check_weights(float("nan"))
    assert CollapseGuard(enabled=False, weight_norm0=1.0).check_weights(float("inf")) is None
    p = [torch.nn.Parameter(torch.tensor([3.0, 0.0])), torch.nn.Parameter(torch.tensor([[4.0]]))]
    assert weight_norm(p) == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------------------- data messages


def test_duplicate_choices_are_refused_with_file_and_item(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps({"question": "Q1?", "choices": ["a", "b"], "answer": 0}) + "\n" +
                 json.dumps({"id": "q2", "question": "Q2?", "choices": ["4", "5", " 4"], "answer": 2}) + "\n")
    with pytest.raises(DataError) as e:
        load_mc(f)
    msg = str(e.value)
    assert str(f) in msg and "line 2" in msg and "q2" in msg and "choices 0 and 2 are the same ('4')" in msg
    assert "\n" not in msg


def test_a_missing_path_says_not_found(tmp_path):
    for name in (str(tmp_path / "nope.jsonl"), "./nope.jsonl", "nope.csv"):
        with pytest.raises(DataError, match="not found"):
            resolve_corpus(name, "train")
    with pytest.raises(DataError, match="not found"):  # (a train corpus spelled org/name is a Hub id)
        resolve_corpus("some/dir", "eval")
    with pytest.raises(DataError, match="Unknown bundled data set 'nope'"):
        resolve_corpus("nope", "eval")


def test_rows_with_empty_instruction_and_output_are_skipped_with_a_warning(tmp_path):
    from dba.data import load_corpus
    from dba.models import load_model

    tok = load_model("tiny").tokenizer
    rows = [{"instruction": "Q?", "output": "A."}, {"instruction": "", "output": ""},
            {"instruction": "Q2?", "output": " "}]
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.warns(UserWarning) as w:
        corpus = load_corpus(f, tok, 64)
    msgs = [str(x.message) for x in w]
    assert len(corpus.examples) == 2
    assert any("1 of 3 rows" in m and "empty instruction and an empty output and were skipped (rows 2)" in m
               for m in msgs)
    assert any("empty output: they teach the model to answer with nothing (rows 3)" in m for m in msgs)
    f.write_text(json.dumps({"instruction": " ", "output": ""}) + "\n")
    with pytest.raises(DataError, match="every row has an empty instruction and an empty output"):
        load_corpus(f, tok, 64)


def test_ctrl_c_after_training_keeps_the_finished_training(small_corpus, tmp_path):
    """Interrupted between the last step and the saved result: the final checkpoint holds the training; resuming only
    saves (and scores) it."""
    from dba.train import RunInterrupted

    full = finetune(tiny_cfg(small_corpus, tmp_path / "full"), progress=False)
    cfg = tiny_cfg(small_corpus, tmp_path / "late")

    def ctrl_c(rec):
        if rec.get("phase") == "save":
            raise KeyboardInterrupt("SIGINT")

    with pytest.raises(RunInterrupted, match="stopped by SIGINT while saving the result .* checkpoint \\(step 6\\)"):
        finetune(cfg, callback=ctrl_c, progress=False)
    st = json.loads((tmp_path / "late" / "status.json").read_text())
    assert st["status"] == "interrupted" and st["step"] == 6
    assert json.loads((tmp_path / "late" / "checkpoint" / "state.json").read_text())["final"] is True
    seen = []
    done = finetune(cfg, resume=True, progress=False, callback=lambda r: seen.append(r.get("type")))
    assert done.status == "completed" and "step" not in seen, "resuming a finished training must not train again"
    assert_same_run(tmp_path / "full", tmp_path / "late")
