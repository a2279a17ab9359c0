"""Background jobs: one worker thread per job, one job at a time per session, one job at a time on the machine.

A :class:`Job` is what the page polls: its state, phase, step progress, the live metric records of each run it
makes, and a cancel :class:`threading.Event` that the engine checks before every optimiser step.

Jobs live in a module-level :data:`REGISTRY` keyed by *session key* — the key the browser keeps in its
``localStorage`` (``gr.BrowserState``), so a reloaded page finds and reattaches to its running job; API clients
(gradio_client) are keyed by their Gradio session. Compute jobs of all sessions share one machine-wide lock
(:data:`MACHINE`) and wait their turn in arrival order: the page shows "queued, position N".
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable

from dba.errors import DBAError

TERMINAL = ("completed", "cancelled", "failed")


class FairLock:
    """A first-come-first-served lock that can say where a waiter stands and let a cancelled waiter leave."""

    def __init__(self):
        self._cond = threading.Condition()
        self._holder: str | None = None
        self._waiting: list[str] = []

    def position(self, ticket: str) -> int:
        """0 while holding the lock, n ≥ 1 while n-th in line, -1 when neither."""
        with self._cond:
            if self._holder == ticket:
                return 0
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else -1

    def acquire(self, ticket: str, give_up: Callable[[], bool]) -> bool:
        """Wait for our turn; returns False (and leaves the line) as soon as ``give_up()`` is true."""
        with self._cond:
            self._waiting.append(ticket)
            try:
                while self._holder is not None or self._waiting[0] != ticket:
                    if give_up():
                        return False
                    self._cond.wait(timeout=0.5)
                if give_up():
                    return False
                self._holder = ticket
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def release(self, ticket: str) -> None:
        with self._cond:
            if self._holder == ticket:
                self._holder = None
                self._cond.notify_all()

    @property
    def holder(self) -> str | None:
        return self._holder


MACHINE = FairLock()
"""Compute jobs of every session run one at a time (two CPU cores or one GPU cannot serve two runs well)."""


@dataclass
class RunTrace:
    """The live view of one fine-tuning run inside a job."""

    label: str
    """What the page calls it ("direct", "dba", "mixture 0.5", ...)."""
    method: str
    run_dir: str | None = None
    steps: int = 0
    records: list[dict] = field(default_factory=list)
    """Step and eval records, as finetune's callback delivered them."""
    config: dict = field(default_factory=dict)
    """The run's FinetuneConfig as a dict (the plots read the method, ratio and DC function from it)."""

    def steps_done(self) -> int:
        return sum(1 for r in self.records if r.get("type") == "step")


@dataclass
class Job:
    """One background task and everything the page shows about it."""

    kind: str
    """"load", "anchor", "finetune", "compare" or "teach"."""
    title: str
    session: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"
    """queued → running → completed / cancelled / failed."""
    phase: str = "queued"
    message: str = "waiting for the machine"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    done: int = 0
    """Units of work done in the current phase (steps, batches, runs)."""
    total: int = 0
    unit: str = "step"
    phase_started: float | None = None
    runs: list[RunTrace] = field(default_factory=list)
    anchor_progress: tuple[int, int] | None = None
    result: dict = field(default_factory=dict)
    """What the job produced (anchor path, run folder, compare folder, summary numbers)."""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    """Narration lines (teaching mode) and remarks, in order."""
    version: int = 0
    """Bumped on every change: the page re-renders only when it moved."""
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    thread: threading.Thread | None = field(default=None, repr=False)

    # ---- updates (called from the worker thread) ----------------------------------------------------------------
    def touch(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, v)
            self.version += 1

    def set_phase(self, phase: str, message: str, total: int = 0, unit: str = "step") -> None:
        self.touch(phase=phase, message=message, done=0, total=total, unit=unit, phase_started=time.time())

    def advance(self, done: int, total: int | None = None) -> None:
        with self.lock:
            self.done = done
            if total is not None:
                self.total = total
            self.version += 1

    def add_run(self, label: str, method: str, steps: int, run_dir: str | None = None) -> RunTrace:
        trace = RunTrace(label=label, method=method, steps=steps, run_dir=run_dir)
        with self.lock:
            self.runs.append(trace)
            self.version += 1
        return trace

    def record(self, trace: RunTrace, rec: dict) -> None:
        """finetune's callback: keep metric records, follow phases, advance the step counter."""
        with self.lock:
            kind = rec.get("type")
            if kind in ("step", "eval"):
                trace.records.append(dict(rec))
                if kind == "step":
                    if self.phase != "train":
                        self.phase, self.phase_started = "train", time.time()
                    self.message = f"{trace.label}: training"
                    self.done, self.total, self.unit = trace.steps_done(), trace.steps, "step"
            elif kind == "phase":
                msg = rec.get("message") or rec.get("phase", "")
                self.message = f"{trace.label}: {msg}"
                if rec.get("phase") in ("eval", "load", "anchor"):
                    self.phase, self.phase_started = rec["phase"], time.time()
            self.version += 1

    def note(self, text: str) -> None:
        with self.lock:
            self.notes.append(text)
            self.version += 1

    # ---- reading (called from the page) -------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state not in TERMINAL

    def eta_seconds(self) -> float | None:
        """Time left in the current phase from its pace so far (None until a unit is done)."""
        with self.lock:
            if not self.phase_started or not self.total or self.done <= 0 or self.done >= self.total:
                return None
            pace = (time.time() - self.phase_started) / self.done
            return pace * (self.total - self.done)

    def snapshot(self) -> dict:
        """A JSON-able summary (the ``job_status`` API answer)."""
        with self.lock:
            return {
                "id": self.id, "kind": self.kind, "title": self.title, "state": self.state, "phase": self.phase,
                "message": self.message, "done": self.done, "total": self.total, "unit": self.unit,
                "queue_position": MACHINE.position(self.id) if self.state == "queued" else 0,
                "elapsed_s": round((self.finished or time.time()) - (self.started or self.created), 1),
                "eta_s": None if self.eta_seconds() is None else round(self.eta_seconds(), 1),
                "runs": [{"label": r.label, "method": r.method, "run_dir": r.run_dir, "steps": r.steps,
                          "steps_done": r.steps_done()} for r in self.runs],
                "result": dict(self.result), "error": self.error, "notes": list(self.notes),
                "version": self.version,
            }


def friendly_error(e: BaseException) -> str:
    """One message a user can act on: the engine's own for DBAError, plain words for memory and device problems."""
    if isinstance(e, DBAError):
        return str(e)
    text = f"{type(e).__name__}: {e}"
    low = text.lower()
    if "out of memory" in low or isinstance(e, MemoryError):
        return ("Out of memory. Lower the batch size or the maximum length, use LoRA (not full fine-tuning) or "
                "4-bit quantisation, or pick a smaller model. (" + text.splitlines()[0][:300] + ")")
    if "cuda" in low and ("not available" in low or "no cuda" in low or "driver" in low):
        return "This option needs a CUDA GPU, and none is available here. Choose device 'cpu' or 'auto'. (" + \
            text.splitlines()[0][:300] + ")"
    return "Unexpected error (a bug — please report it with the log): " + text.splitlines()[0][:500]


class Registry:
    """Jobs by session key. A session has at most one active job; finished ones stay readable until replaced."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def current(self, session: str) -> Job | None:
        with self._lock:
            return self._jobs.get(session)

    def active(self, session: str) -> bool:
        job = self.current(session)
        return job is not None and job.active

    def queued(self) -> int:
        """Jobs of all sessions waiting for the machine."""
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state == "queued")

    def start(self, session: str, kind: str, title: str, work: Callable[[Job], None],
              max_queue: int | None = None) -> Job:
        """Start ``work(job)`` in a worker thread once the machine is free. Raises DBAError when this session
        already has a job that has not finished, or when ``max_queue`` jobs already wait for the machine."""
        with self._lock:
            old = self._jobs.get(session)
            if old is not None and old.active:
                raise DBAError(f"This session is already running “{old.title}” ({old.state}). Wait for it to "
                               "finish or cancel it first.")
            waiting = sum(1 for j in self._jobs.values() if j.state == "queued")
            if max_queue is not None and waiting >= max_queue:
                raise DBAError(f"The server is busy: {waiting} jobs are already waiting for the machine (the most "
                               "this server queues, DBA_STUDIO_MAX_QUEUE). Try again in a few minutes.")
            job = Job(kind=kind, title=title, session=session)
            self._jobs[session] = job
        job.thread = threading.Thread(target=self._run, args=(job, work), name=f"dba-job-{job.id}", daemon=True)
        job.thread.start()
        return job

    @staticmethod
    def _run(job: Job, work: Callable[[Job], None]) -> None:
        if not MACHINE.acquire(job.id, give_up=job.cancel.is_set):
            job.touch(state="cancelled", phase="cancelled", message="cancelled while waiting in the queue",
                      finished=time.time())
            return
        try:
            job.touch(state="running", started=time.time(), message="starting")
            work(job)
            if job.state == "running":
                cancelled = job.cancel.is_set()
                job.touch(state="cancelled" if cancelled else "completed",
                          phase="cancelled" if cancelled else "done",
                          message=("cancelled — the run folder is consistent and resumable" if cancelled
                                   else "finished"), finished=time.time())
        except BaseException as e:  # the app must keep running whatever a job does
            if not isinstance(e, DBAError):
                traceback.print_exc()
            job.touch(state="failed", phase="failed", error=friendly_error(e), message="failed",
                      finished=time.time())
        finally:
            MACHINE.release(job.id)

    def cancel(self, session: str) -> Job | None:
        job = self.current(session)
        if job is not None and job.active:
            job.cancel.set()
            job.touch(message=job.message + " — cancelling at the next step")
        return job

    def wait(self, session: str, timeout: float) -> Job | None:
        job = self.current(session)
        if job is not None and job.thread is not None:
            job.thread.join(timeout=max(0.0, timeout))
        return job


REGISTRY = Registry()
