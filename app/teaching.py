"""The lesson ("Start here: see forgetting"): the job that runs :func:`dba.lesson.run_lesson` for a session, the
narration shown while it runs, and the recorded lesson shipped with the repo.

A thin recipe: the lesson itself (runs, caches, scores, answers, the summary and its noise verdicts) lives in
:mod:`dba.lesson`; this module only maps its progress events onto a :class:`app.jobs.Job` and keeps the live record
for the page to draw (with :func:`dba.lesson.figures` and :func:`dba.lesson.answers_markdown`, the same code that
draws the recorded lesson).
"""
from __future__ import annotations

import html
from pathlib import Path

from dba.errors import DBAError
from dba.lesson import LESSON_REMEDY, LessonCancelled, LessonConfig, load_record, run_lesson, shareable

from .jobs import Job
from .session import Workspace
from .settings import REPO_ROOT

RECORDED_LESSON = REPO_ROOT / "app" / "recorded_lesson.json"
"""The recorded lesson the page shows instantly (written by ``scripts/record_lesson.py``)."""

INTRO = (
    "### What this shows\n"
    "We fine-tune **{model}** on the **{domain}** domain twice — same data, same order, same seed, {steps} steps "
    "({mode}, η₀ {lr:g}): once the usual way (**direct**: domain data only) and once with the remedy "
    "**{remedy}** ({remedy_summary}). Before and after each run (and on the way, when the preset has time) the model "
    "takes two quizzes: general "
    "questions (**S_G**, what it should *keep*) and {domain} questions (**S_D**, what it should *learn*); the bars "
    "are 95 % intervals. At the end every model answers the same plain questions in its own words."
)
ANCHOR = (
    "**The global gradient ĝ_G.** One pass over general text with the learning rate at zero: the weights do not move, "
    "we only average the gradient. ĝ_G points the way the *general* loss falls; the remedy uses it as a compass. It "
    "is computed once per model and general corpus and then reused (cached) by every lesson."
)
DIRECT = (
    "**Direct fine-tuning** (red). Domain data only. Watch **S_G**: a drop below the dotted base line, with an "
    "interval that stays below it, is *catastrophic forgetting*."
)
REMEDY = (
    "**The remedy: {remedy}.** The same data, order and steps. Compare its S_G curve with direct's — and read the "
    "answers table when it finishes."
)
MIXTURE = (
    "**The remedy: mixture.** The same steps, with a share of general examples in every batch (no ĝ_G needed). "
    "Compare its S_G curve with direct's — and read the answers table when it finishes."
)

READING_GUIDE = """### How to read the plots
- **S_G and S_D over steps** — the two quizzes at each evaluation, with 95 % intervals. The dotted line is the base
  model. Learning the domain is S_D going *up*; forgetting is S_G going *down*. A gap smaller than the intervals is
  noise.
- **The score plane** — each run is a path from the base model (★). Right is better at the domain, up is better at
  general questions; the grey curves join points of equal S. A good fine-tune moves *right without going down*.
- **Training loss** — the domain loss. Both methods should learn.
- **ρ and λ, the DC curve** (DBA-family remedies) — ρ_t near +1: the domain step also helps general knowledge; below
  0: it would hurt it. λ_t is the step multiplier dynamic correction picks from ρ_t.
- **In its own words** — ✓: the reply says the expected answer; ✗: it does not.
"""


def lesson_config(ws: Workspace, domain: str, folder: Path, remedy: str = LESSON_REMEDY) -> LessonConfig:
    """The session's lesson: the Studio's lesson preset (``DBA_STUDIO_LESSON_PRESET``), the Model tab's model and
    device, the remedy picked on the page (default: the library's, :data:`dba.lesson.LESSON_REMEDY`); base scores and
    ĝ_G shared through the cache by every session. The lesson keeps no weights (time and disk; fine-tune in the
    Fine-tune tab to chat with one)."""
    s = ws.settings
    return LessonConfig(preset=s.lesson_preset_name, remedy=remedy, domain=domain, model=ws.model.name,
                        device=ws.model.device, output_dir=str(folder))


def intro(cfg: LessonConfig) -> str:
    from dba.config import preset
    from dba.methods import METHODS

    p = preset(cfg.preset).run
    mode = f"LoRA rank {p.lora.rank}" if p.lora is not None else "full fine-tuning"
    return INTRO.format(model=cfg.model or p.model, domain=cfg.domain, steps=p.steps, mode=mode, lr=p.dba.anneal.lr,
                        remedy=cfg.remedy, remedy_summary=METHODS[cfg.remedy].summary)


def intro_of(record: dict) -> str:
    """The intro of a lesson record (recorded or finished), from what it ran."""
    r, rem = record.get("run") or {}, record.get("remedy") or {}
    mode = f"LoRA rank {r['lora']['rank']}" if r.get("lora") else "full fine-tuning"
    return INTRO.format(model=r.get("model"), domain=r.get("domain"), steps=r.get("steps"), mode=mode,
                        lr=float(r.get("lr") or 0), remedy=rem.get("name"), remedy_summary=rem.get("summary"))


def page_record(record: dict) -> dict:
    """A copy of a lesson record for the page and its API (:func:`dba.lesson.shareable`: no server paths)."""
    return shareable(record)


def lesson_job(ws: Workspace, domain: str, remedy: str = LESSON_REMEDY):
    """One click: the lesson of :mod:`dba.lesson`, narrated on the job; its live record in ``job.result["lesson"]``
    (drawn by the tab while it runs), the finished record there too."""
    folder = ws.new_run_dir(f"lesson-{domain}")
    cfg = lesson_config(ws, domain, folder, remedy)

    def work(job: Job) -> None:
        traces = {}
        job.note(intro(cfg))
        job.touch(result={"lesson_dir": folder.name, "recorded": False})

        def on_event(ev: dict) -> None:
            kind = ev.get("type")
            if kind == "lesson":
                ph, msg = ev.get("phase"), ev.get("message", "")
                if ph == "run":
                    label = ev["label"]
                    trace = job.add_run(label, ev.get("method", label), int(ev.get("steps") or 0), ev.get("run_dir"))
                    trace.config = ev.get("config") or {}
                    traces[label] = trace
                    with ws.lock:
                        ws.runs.append(ev.get("run_dir"))
                    job.note(DIRECT if label == "direct" else (MIXTURE if cfg.remedy == "mixture"
                                                               else REMEDY.format(remedy=label)))
                    job.set_phase("load", msg, total=trace.steps)
                elif ph == "anchor" and ev.get("total") and ev.get("done") is not None:
                    if job.phase != "anchor":
                        job.set_phase("anchor", msg, total=int(ev["total"]), unit="batch")
                    job.advance(int(ev["done"]), int(ev["total"]))
                elif ph == "anchor" and ev.get("cache") is None:
                    job.note(ANCHOR)
                    job.set_phase("anchor", msg, total=int(ev.get("total") or 0), unit="batch")
                elif ev.get("cache") is not None:
                    job.note(html.escape(msg) + ".")
                    job.touch(message=msg)
                elif ph in ("load", "base", "final", "answers"):
                    job.set_phase("eval" if ph in ("base", "final") else "load", msg)
                else:
                    job.touch(message=msg)
            elif kind in ("step", "eval", "phase") and ev.get("run") in traces:
                job.record(traces[ev["run"]], ev)

        def watch(record: dict) -> None:
            snap = page_record(record)
            with job.lock:
                job.result = {**job.result, "lesson": snap}
                job.version += 1

        try:
            record = run_lesson(cfg, callback=on_event, cancel=job.cancel, watch=watch,
                                command="the Studio's lesson tab")
        except LessonCancelled:
            return
        job.note(record["summary"]["text"])
        shown = page_record(record)
        job.touch(result={**job.result, "lesson": shown, "summary": record["summary"]["verdicts"],
                          "seconds": record["timings"]["total"], "cache": shown["cache"]})
    return work, cfg


def recorded_lesson(path: Path | None = None) -> dict:
    """The shipped recorded lesson (a clear error when the repo has none)."""
    path = Path(path or RECORDED_LESSON)
    if not path.exists():
        raise DBAError("This installation has no recorded lesson (app/recorded_lesson.json); run the lesson live, or "
                       "record one with: python scripts/record_lesson.py")
    return load_record(path)


def recorded_banner(record: dict) -> str:
    """The label above a recorded lesson: what it is, when and where it was made, and how to make it again."""
    m = record.get("machine") or {}
    t = (record.get("timings") or {}).get("total")
    took = f", took {t / 60:.1f} min" if t else ""
    cmd = record.get("command") or "scripts/record_lesson.py"
    return (f"**RECORDED LESSON** — not running now. Recorded {record.get('created', '?')} on "
            f"{m.get('text', 'an unknown machine')}{took}; model `{(record.get('run') or {}).get('model')}`, domain "
            f"**{(record.get('run') or {}).get('domain')}**, remedy **{(record.get('remedy') or {}).get('name')}**. "
            f"Regenerate it with `{cmd}`. Press **Run the lesson live** to make your own.")


def cache_line(record: dict) -> str:
    """Which computed-once results the lesson took from the cache (or computed and stored)."""
    out = []
    for c in (record.get("cache") or {}).values():
        if c:
            out.append(c.get("what", "?") + (": from the cache" if c.get("hit") else
                                                                            ": computed now and cached"))
    return " · ".join(out)
