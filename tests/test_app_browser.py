"""DBA Studio in a real browser (Debian's chromium, driven by Playwright, headless): load the page, run the teaching
preset ("see forgetting") on the tiny model, wait for the live plots to render, reload the page and check that it
reattaches to the session's job, and save a screenshot under the test's temp folder."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
from playwright import sync_api

CHROMIUM = os.environ.get("DBA_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium; .ci/run does) to run "
                "the browser test", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app/ package sits at the repo root
from app import launch  # noqa: E402
from app.settings import StudioSettings  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LESSON_TIMEOUT_MS = 300_000  # the lesson takes ~30 s on an idle 2-core machine with the tiny model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio_url(tmp_path_factory):
    settings = StudioSettings(model="tiny", preset_name="smoke", host="127.0.0.1", port=free_port(),
                              runs_root=tmp_path_factory.mktemp("studio-runs"), device="cpu")
    demo, (_, url, _) = launch(settings, prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


def test_teaching_preset_in_a_browser(studio_url, tmp_path):
    t0 = time.time()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            shot = tmp_path / "studio-teaching.png"
            try:
                # the page polls its job every 2 s, so the network is never idle: wait for the button instead
                page.goto(studio_url, wait_until="load", timeout=120_000)
                page.get_by_role("button", name="Run the lesson").click(timeout=60_000)
                # the narration starts at once; the job bar follows the job
                page.get_by_text("What this shows").wait_for(timeout=120_000)
                page.locator("#job-bar").get_by_text("Lesson: direct vs DBA").wait_for(timeout=120_000)

                # reload mid-lesson: the browser's stored session key brings the page back to the same job
                page.reload(wait_until="load")
                page.locator("#job-bar").get_by_text("Lesson: direct vs DBA").wait_for(timeout=120_000)

                # the plots render as images once the runs report; the summary appears when the lesson ends
                page.locator("#teach-scores img").first.wait_for(state="visible", timeout=LESSON_TIMEOUT_MS)
                page.get_by_text("What happened").wait_for(timeout=LESSON_TIMEOUT_MS)
                page.locator("#job-bar .dba-state.completed").wait_for(timeout=60_000)
                for plot in ("#teach-scores", "#teach-loss", "#teach-rho", "#teach-dc", "#teach-plane"):
                    img = page.locator(f"{plot} img").first
                    img.wait_for(state="visible", timeout=60_000)
                    assert img.evaluate("i => i.complete && i.naturalWidth > 100"), f"{plot} did not render"
                page.wait_for_timeout(500)
            finally:  # a screenshot of whatever the page shows, also when a step above failed
                page.screenshot(path=str(shot), full_page=True)
                print(f"\nscreenshot: {shot}")
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 20_000
    assert not errors, errors
    print(f"teaching preset in the browser (tiny model, smoke preset): {time.time() - t0:.1f} s")


# ---- the lesson (H10): live on the tiny model, then the recorded lesson; screenshots of both -------------------------


@pytest.fixture
def lesson_studio(tmp_path, monkeypatch):
    """A Studio of its own (tiny model, smoke lesson), its runs root known, an empty result cache."""
    monkeypatch.setenv("DBA_RESULT_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    settings = StudioSettings(model="tiny", preset_name="smoke", host="127.0.0.1", port=free_port(), runs_root=runs,
                              device="cpu")
    demo, (_, url, _) = launch(settings, prevent_thread_lock=True, quiet=True)
    yield url, runs
    demo.close()


def test_lesson_live_then_recorded_in_a_browser(lesson_studio, tmp_path, monkeypatch):
    import shutil

    import app.teaching as teaching
    from dba.lesson import LESSON_REMEDY, QUESTIONS

    url, runs = lesson_studio
    t0 = time.time()
    shots = {"finished": tmp_path / "lesson-finished.png", "recorded": tmp_path / "lesson-recorded.png"}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url, wait_until="load", timeout=120_000)
            page.get_by_role("button", name="Run the lesson live").click(timeout=60_000)
            page.locator("#teach-banner").get_by_text("LIVE LESSON").wait_for(timeout=120_000)
            page.get_by_text("What happened").wait_for(timeout=LESSON_TIMEOUT_MS)
            page.locator("#job-bar .dba-state.completed").wait_for(timeout=60_000)
            page.locator("#teach-banner").get_by_text("finished").wait_for(timeout=60_000)
            # the side-by-side answers: one row per question, base / direct / remedy columns
            table = page.locator("#teach-answers table")
            table.wait_for(timeout=60_000)
            assert table.locator("tbody tr").count() == len(QUESTIONS)
            header = table.locator("thead").inner_text()
            assert "base (start)" in header and "direct (end)" in header and f"{LESSON_REMEDY} (end)" in header
            for q in QUESTIONS:
                assert q.text in table.inner_text()
            for plot in ("#teach-scores", "#teach-plane", "#teach-loss", "#teach-rho", "#teach-dc"):
                img = page.locator(f"{plot} img").first
                img.wait_for(state="visible", timeout=60_000)
                assert img.evaluate("i => i.complete && i.naturalWidth > 100"), f"{plot} did not render"
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots["finished"]), full_page=True)

            # the recorded lesson: this lesson's record, shipped as the recorded file, shown at once and labelled
            recorded = tmp_path / "recorded_lesson.json"
            shutil.copy(next(runs.rglob("lesson.json")), recorded)
            monkeypatch.setattr(teaching, "RECORDED_LESSON", recorded)
            page.get_by_role("button", name="Show the recorded lesson").click(timeout=60_000)
            page.locator("#teach-banner").get_by_text("RECORDED LESSON").wait_for(timeout=60_000)
            assert "scripts/record_lesson.py" in page.locator("#teach-banner").inner_text() or \
                "the Studio's lesson tab" in page.locator("#teach-banner").inner_text()
            page.locator("#teach-scores img").first.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots["recorded"]), full_page=True)
        finally:
            browser.close()
    for shot in shots.values():
        assert shot.exists() and shot.stat().st_size > 20_000
        print(f"\nscreenshot: {shot}")
    keep = os.environ.get("DBA_SCREENSHOT_DIR")
    if keep:  # e.g. for a closing note
        for shot in shots.values():
            shutil.copy(shot, Path(keep) / shot.name)
    assert not errors, errors
    print(f"lesson in the browser (tiny model, smoke preset): {time.time() - t0:.1f} s")
