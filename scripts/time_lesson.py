"""Time the Studio's lesson end to end, as a class meets it: start the app, press "Run the lesson" through its API
(gradio_client, the page's own endpoints ``/start_teaching`` and ``/wait_job``), and wait for the finished lesson —
once on a first visit (no cached base scores or global gradient) and once more from a second session (a repeat: the
caches are warm).

    python scripts/time_lesson.py                          # the embedded default, lesson preset, app in a subprocess
    DBA_STUDIO_MODEL=tiny python scripts/time_lesson.py --preset smoke     # a smoke check in seconds

Not run in CI (the embedded-default lesson takes minutes). The first visit starts from an empty result cache (a new
temporary ``DBA_RESULT_CACHE``, unless ``--cache-dir`` names one); the converted default model checkpoint is kept
(``make studio`` prepares it once). Prints the times, the lesson's own breakdown, which caches were used, the
summary and the side-by-side answers; ``--json FILE`` writes all of it.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dba.lesson import LESSON_REMEDY  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen | None, timeout: float) -> float:
    """Seconds until the page answers."""
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"The app exited with code {proc.returncode} before it served the page.")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"The app did not answer at {url} within {timeout:.0f} s.")


def one_visit(url: str, domain: str, remedy: str, timeout: float) -> dict:
    """A new session presses "Run the lesson" and waits for it to finish; returns the times and the job's status."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    try:
        t0 = time.perf_counter()
        client.predict(domain, remedy, api_name="/start_teaching")
        st = None
        while time.perf_counter() - t0 < timeout:
            st = client.predict(600, api_name="/wait_job")
            if st["state"] in ("completed", "cancelled", "failed"):
                break
        seconds = time.perf_counter() - t0
    finally:
        client.close()
    if st is None or st["state"] != "completed":
        raise SystemExit(f"The lesson did not complete: {json.dumps(st, default=str)[:2000]}")
    return {"seconds": round(seconds, 1), "job_seconds": st["elapsed_s"], "record": st["result"].get("lesson")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default=os.environ.get("DBA_STUDIO_MODEL") or "default",
                    help="the model the page starts with (default: $DBA_STUDIO_MODEL or the embedded default)")
    ap.add_argument("--preset", default=os.environ.get("DBA_STUDIO_LESSON_PRESET") or "lesson",
                    help="the lesson preset (DBA_STUDIO_LESSON_PRESET; 'smoke' with the tiny model)")
    ap.add_argument("--domain", default="finance")
    ap.add_argument("--remedy", default=LESSON_REMEDY, help=f"the remedy picked on the page (default {LESSON_REMEDY})")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--visits", type=int, default=2, help="lessons in a row, each from a new session (default 2: "
                    "first visit, then a repeat with warm caches)")
    ap.add_argument("--cache-dir", help="the result cache to use (default: a new empty temporary folder)")
    ap.add_argument("--in-process", action="store_true", help="launch the app in this process instead of a "
                    "subprocess (python app.py)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds one lesson may take")
    ap.add_argument("--json", help="write the times, breakdowns and the last lesson record to this file")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="dba-time-lesson-"))
    cache = Path(args.cache_dir) if args.cache_dir else work / "cache"
    port = free_port()
    env = {**os.environ, "DBA_STUDIO_MODEL": args.model, "DBA_STUDIO_LESSON_PRESET": args.preset,
           "DBA_STUDIO_PRESET": "smoke" if args.preset == "smoke" else os.environ.get("DBA_STUDIO_PRESET", "quick"),
           "DBA_STUDIO_PORT": str(port), "DBA_STUDIO_HOST": "127.0.0.1", "DBA_STUDIO_RUNS": str(work / "runs"),
           "DBA_STUDIO_DEVICE": args.device, "DBA_RESULT_CACHE": str(cache), "DBA_STUDIO_PUBLIC": "0",
           "DBA_STUDIO_LESSON": "live"}
    url = f"http://127.0.0.1:{port}/"
    proc = demo = None
    t_launch = time.perf_counter()
    try:
        if args.in_process:
            os.environ.update(env)
            from app import launch

            demo, _ = launch(prevent_thread_lock=True, quiet=True)
            ready = time.perf_counter() - t_launch
        else:
            proc = subprocess.Popen([sys.executable, str(REPO / "app.py")], cwd=REPO, env=env,
                                    stdout=open(work / "app.log", "w"), stderr=subprocess.STDOUT)
            ready = wait_for_server(url, proc, 600)
        print(f"app ready in {ready:.1f} s  (model {args.model}, lesson preset {args.preset}, cache {cache})",
              flush=True)
        visits = []
        for i in range(args.visits):
            v = one_visit(url, args.domain, args.remedy, args.timeout)
            rec = v["record"] or {}
            used = {k: bool(c and c.get("hit")) for k, c in (rec.get("cache") or {}).items()}
            # named by what the lesson reports, not by guess: a --cache-dir may be empty or already warm
            name = f"visit {i + 1}: " + ("caches warm" if any(used.values()) else "first visit (no caches)")
            v["name"] = name
            visits.append(v)
            print(f"{name}: {v['seconds']:.1f} s from the click to the finished lesson "
                  f"(job {v['job_seconds']} s); caches used: {used}", flush=True)
    finally:
        if demo is not None:
            demo.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    from dba.lesson import answers_markdown

    last = visits[-1]["record"]
    print("\n| visit | click → finished lesson | lesson's own breakdown |\n|---|---|---|")
    for v in visits:
        t = (v["record"] or {}).get("timings") or {}
        runs = ", ".join(f"{k} {x.get('total', 0):.0f} s" for k, x in (t.get("runs") or {}).items())
        print(f"| {v['name']} | {v['seconds']:.1f} s ({v['seconds'] / 60:.2f} min) | load {t.get('load', 0):.0f} s, "
              f"base {t.get('base', 0):.0f} s, anchor {t.get('anchor', 0):.0f} s, {runs} |")
    print(f"\napp start (server ready): {ready:.1f} s\n")
    print(last["summary"]["text"])
    print("\n" + answers_markdown(last))
    if args.json:
        Path(args.json).write_text(json.dumps({"app_ready_seconds": round(ready, 1), "model": args.model,
                                               "preset": args.preset, "visits": visits}, indent=2, default=str))
        print(f"\nwritten: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
