"""Record the lesson: run :func:`dba.lesson.run_lesson` (the embedded default model, the ``lesson`` preset, finance)
and write its record — metrics over steps, intervals, the models' answers, the summary, timings, the machine and this
command — to ``app/recorded_lesson.json`` (atomically), the file the Studio's lesson tab shows as "recorded".

    python scripts/record_lesson.py                                   # the real recording (minutes on 2 CPU cores)
    python scripts/record_lesson.py --model tiny --preset smoke --out /tmp/rec.json     # a smoke check in seconds
    python scripts/record_lesson.py --screenshot lesson.png           # also a screenshot of the page showing it

Not run in CI. The base scores and the global gradient come from (and go to) the result cache (``--no-cache`` to
compute them afresh). The runs' folders go to a temporary lesson folder (``--runs`` to keep them elsewhere); their
weights are deleted once the lesson is done unless ``--keep-weights``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_OUT = REPO / "app" / "recorded_lesson.json"
"""= app.teaching.RECORDED_LESSON (not imported, so that recording needs no Gradio)."""


def command_line(args) -> str:
    """The command that regenerates this recording (stored in the record and shown on the page)."""
    parts = ["python", "scripts/record_lesson.py", "--model", args.model, "--preset", args.preset, "--remedy",
             args.remedy, "--domain", args.domain]
    if args.eval_every is not None:
        parts += ["--eval-every", str(args.eval_every)]
    if Path(args.out).resolve() != DEFAULT_OUT.resolve():
        parts += ["--out", str(args.out)]
    return shlex.join(parts)


def screenshot(record_path: Path, png: Path, model: str, lesson_preset: str) -> None:
    """The Studio opened on this recorded lesson in Debian's chromium (headless), full page."""
    import socket

    from playwright import sync_api

    import app.teaching as teaching
    from app import launch
    from app.settings import StudioSettings

    teaching.RECORDED_LESSON = record_path
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = StudioSettings(model=model, preset_name="smoke" if lesson_preset == "smoke" else "quick", port=port,
                              lesson_preset=lesson_preset, lesson_opens="recorded",
                              runs_root=Path(tempfile.mkdtemp(prefix="dba-shot-")), device="cpu")
    demo, (_, url, _) = launch(settings, prevent_thread_lock=True, quiet=True)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, wait_until="load", timeout=120_000)
            page.get_by_text("Recorded lesson").first.wait_for(timeout=120_000)
            page.locator("#teach-scores img").first.wait_for(state="visible", timeout=120_000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(png), full_page=True)
            browser.close()
    finally:
        demo.close()


def main(argv=None) -> int:
    from dba.lesson import LESSON_REMEDY, LessonConfig, answers_markdown, run_lesson, save_record, shareable

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="default", help="the model (default: the embedded default)")
    ap.add_argument("--preset", default="lesson", help="the run sizes (default: lesson)")
    ap.add_argument("--remedy", default=LESSON_REMEDY, help=f"the remedy (default: {LESSON_REMEDY}, "
                    "dba.lesson.LESSON_REMEDY)")
    ap.add_argument("--domain", default="finance")
    ap.add_argument("--eval-every", type=int, default=None, help="score every N steps (default: the lesson's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help=f"the record (default: {DEFAULT_OUT.relative_to(REPO)}, "
                    "what the app shows)")
    ap.add_argument("--runs", default=None, help="the lesson folder for the two runs (default: a temporary one)")
    ap.add_argument("--no-cache", action="store_true", help="compute the base scores and the global gradient afresh")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--keep-weights", action="store_true", help="keep the runs' saved weights")
    ap.add_argument("--screenshot", default=None, help="also save a PNG of the Studio showing this recording")
    args = ap.parse_args(argv)

    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="dba-lesson-")) / "lesson"
    cfg = LessonConfig(preset=args.preset, remedy=args.remedy, domain=args.domain, model=args.model,
                       device=args.device, eval_every=args.eval_every, output_dir=str(runs),
                       cache=not args.no_cache, cache_dir=args.cache_dir, keep_weights=args.keep_weights)
    t0 = time.perf_counter()

    def show(ev):
        if ev.get("type") == "lesson" and ev.get("phase") != "anchor" or ev.get("cache"):
            print(f"[{time.perf_counter() - t0:6.1f} s] {ev.get('message')}", flush=True)

    record = run_lesson(cfg, callback=show, progress=True, command=command_line(args))
    out = save_record(shareable(record), args.out, compact=True)
    print()
    print(record["summary"]["text"])
    print()
    print(answers_markdown(record))
    t = record["timings"]
    print(f"\nwritten: {out} ({out.stat().st_size / 1024:.1f} KB); lesson {t['total']:.0f} s "
          f"(load {t.get('load', 0):.0f} s, base {t.get('base', 0):.0f} s, anchor {t.get('anchor', 0):.0f} s, "
          + ", ".join(f"{k} {v.get('total', 0):.0f} s" for k, v in t.get("runs", {}).items()) + ")")
    print(f"runs: {runs}")
    if args.screenshot:
        screenshot(Path(out).resolve(), Path(args.screenshot), args.model, args.preset)
        print(f"screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
