"""DBA Studio as a public Space, tried by a second, hostile user: two sessions against one app in public mode.

Session A works normally (upload, fine-tune, export); session B — through gradio_client and through raw HTTP — tries
to list, chat with, export, cancel and fetch A's things, to take over A's session with A's key or a forged one, and
to ask for more than public mode allows. Plus the pieces underneath: signed keys, the queue cap, the disk quota and
the sweep of old sessions. The app runs in-process on a free local port with the tiny model.
"""
from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app/ package sits at the repo root
from app import launch  # noqa: E402
from app.jobs import MACHINE, Registry  # noqa: E402
from app.limits import check_lr, check_model, check_preset, check_quota, check_steps  # noqa: E402
from app.session import Keys, Sessions  # noqa: E402
from app.settings import Limits, StudioSettings  # noqa: E402
from dba.errors import DBAError  # noqa: E402

WAIT = 300  # seconds a job may take on a busy 2-core machine (they take ~5-20 s)
LIMITS = Limits(max_steps=6, max_batch=4, max_eval_items=4, max_anchor_batches=4, max_rank=8, max_runs=3,
                max_queue=4, quota_mb=50, lr_min=1e-6, lr_max=1e-2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    runs = tmp_path_factory.mktemp("public-runs")
    settings = StudioSettings(model="tiny", preset_name="smoke", host="127.0.0.1", port=free_port(), runs_root=runs,
                              upload_mb=1, anchor_mb=2, device="cpu", public=True, limits=LIMITS)
    demo, (_, url, _) = launch(settings, prevent_thread_lock=True, quiet=True)
    yield demo, settings, url.rstrip("/")
    demo.close()


def client(url: str, tmp: Path) -> Client:
    return Client(url, verbose=False, download_files=str(tmp))


def wait(c: Client, timeout: float = WAIT) -> dict:
    deadline = time.time() + timeout
    while True:  # public mode answers wait_job after at most a minute: ask again
        st = c.predict(60, api_name="/wait_job")
        if st["state"] in ("completed", "cancelled", "failed") or time.time() > deadline:
            break
    assert st["state"] in ("completed", "cancelled", "failed"), st
    return st


def raw_call(url: str, api: str, data: list, session_hash: str) -> tuple[str, object]:
    """A raw HTTP call of an endpoint (Gradio's /call API): ("complete", outputs) or ("error", message)."""
    r = httpx.post(f"{url}/gradio_api/call/{api}", json={"data": data, "session_hash": session_hash}, timeout=60)
    r.raise_for_status()
    event_id = r.json()["event_id"]
    kind, payload = None, None
    with httpx.stream("GET", f"{url}/gradio_api/call/{api}/{event_id}", timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("complete", "error"):
                text = line.split(":", 1)[1].strip()
                try:
                    payload = json.loads(text)
                except json.JSONDecodeError:
                    payload = text
                return kind, payload
    return str(kind), payload


def test_keys_are_issued_and_verified():
    keys = Keys("server secret")
    k = keys.issue()
    sid = keys.verify(k)
    assert sid and k.startswith(sid + ".")
    assert Keys("server secret").verify(k) == sid  # the same secret (DBA_STUDIO_SECRET) keeps sessions
    assert Keys("another secret").verify(k) is None
    forged = sid + "." + "0" * 32
    for bad in (forged, sid, "", None, 42, "../../etc.passwd", k + "x", "a" * 500):
        assert keys.verify(bad) is None, bad
    folder = keys.folder(sid)
    assert sid not in folder and k not in folder and folder.startswith("s-")


def test_old_sessions_are_swept_and_busy_ones_kept(tmp_path):
    settings = StudioSettings(model="tiny", preset_name="smoke", runs_root=tmp_path / "runs", public=True)
    sessions = Sessions(settings, tmp_root=tmp_path / "tmp")
    idle, busy = sessions.workspace("a" * 32), sessions.workspace("b" * 32)
    for ws in (idle, busy):
        (ws.uploads / "data.jsonl").write_text("{}\n")
        ws.runs_dir.mkdir(parents=True)
        (ws.runs_dir / "x.txt").write_text("x")
    stale = settings.runs_root / "s-fromanearlierstart"  # a folder left by a session of an earlier start
    stale.mkdir()
    gone = sessions.sweep(0.0, busy=lambda sid: sid == busy.id)
    assert idle.folder in gone and busy.folder not in gone and stale.name in gone
    assert not idle.runs_dir.exists() and not (idle.tmp_root / idle.folder).exists() and not stale.exists()
    assert busy.runs_dir.exists()


def test_disk_quota_refuses_new_work(tmp_path):
    settings = StudioSettings(runs_root=tmp_path / "runs", public=True, limits=Limits(quota_mb=1))
    ws = Sessions(settings, tmp_root=tmp_path / "tmp").workspace("c" * 32)
    check_quota(settings, ws)
    (ws.uploads / "big.bin").write_bytes(b"0" * (2 * 2**20))
    with pytest.raises(DBAError, match="DBA_STUDIO_QUOTA_MB"):
        check_quota(settings, ws)
    check_quota(StudioSettings(runs_root=tmp_path / "runs", public=False), ws)  # local mode: no quota


def test_a_preset_beyond_the_limits_stops_a_public_start():
    check_preset(StudioSettings(model="tiny", preset_name="smoke", public=True, limits=LIMITS))
    with pytest.raises(SystemExit, match="DBA_STUDIO_PRESET=lesson.*DBA_STUDIO_ALLOW_FULL"):
        check_preset(StudioSettings(preset_name="lesson", public=True))  # full fine-tuning, off by default
    with pytest.raises(SystemExit, match="DBA_STUDIO_PRESET=quick.*DBA_STUDIO_MAX_STEPS"):
        check_preset(StudioSettings(preset_name="quick", public=True, limits=Limits(max_steps=10)))
    check_preset(StudioSettings(preset_name="lesson", public=False))  # local mode: no limits


def test_queue_length_is_capped():
    reg, ticket, gate = Registry(), "hold-the-machine", threading.Event()
    assert MACHINE.acquire(ticket, give_up=lambda: False)
    try:
        for s in ("q1", "q2"):
            reg.start(s, "anchor", s, lambda job: None, max_queue=2)
        deadline = time.time() + 10
        while reg.queued() < 2 and time.time() < deadline:
            time.sleep(0.05)
        with pytest.raises(DBAError, match="DBA_STUDIO_MAX_QUEUE"):
            reg.start("q3", "anchor", "q3", lambda job: None, max_queue=2)
    finally:
        for s in ("q1", "q2"):
            reg.cancel(s)
        MACHINE.release(ticket)
        gate.set()
    for s in ("q1", "q2"):
        assert reg.wait(s, 30).state == "cancelled"


def test_two_sessions_are_isolated(app, tmp_path):
    demo, settings, url = app
    page = demo.studio_page
    a, b = client(url, tmp_path / "a"), client(url, tmp_path / "b")
    try:
        # A loads the page: the server issues its key
        a_key = a.predict(None, api_name="/init_session")[0]
        a_id = page.sessions.keys.verify(a_key)
        assert a_id, a_key
        # A uploads its own data and fine-tunes on it
        secret_rows = "\n".join(json.dumps({"instruction": f"Secret of A number {i}?", "output": f"A-{i}"})
                                for i in range(12)) + "\n"
        data = tmp_path / "a private.jsonl"
        data.write_text(secret_rows)
        msg, selected = a.predict(handle_file(str(data)), api_name="/check_domain_upload")
        assert "12 rows" in msg and selected == "my upload"
        a.predict(domain="my upload", file=handle_file(str(data)), method="direct", steps=2, batch_size=4,
                  eval_every=0, eval_items=2, api_name="/start_finetune")
        st = wait(a)
        assert st["state"] == "completed", st["error"]
        run_dir = Path(st["runs"][0]["run_dir"])
        a_ws = page.sessions.workspace(a_id)
        assert a_ws.runs_dir in run_dir.parents
        stored_upload = a_ws.uploads / "a_private.jsonl"
        assert stored_upload.exists()
        a_runs = a.predict(api_name="/list_runs")[0]["choices"]
        assert len(a_runs) == 1
        a_ref = a_runs[0][1]
        zpath = a.predict(run=a_ref, api_name="/export_adapter")
        with zipfile.ZipFile(zpath) as z:
            zipped = {n: z.read(n) for n in z.namelist()}
        assert {"adapter_model.safetensors", "dba-run/config.json"} <= set(zipped)
        # the download names no server folder and holds neither A's key nor its id nor its folder
        blob = b"".join(zipped.values())
        for secret in (a_key, a_id, a_ws.folder, str(page.sessions.tmp_root), str(settings.runs_root)):
            assert secret.encode() not in blob, secret
        assert json.loads(zipped["dba-run/config.json"])["domain"] == "uploads/a_private.jsonl"
        # nor does any file the server wrote, any status A can read, or A's job bar
        for root in (settings.runs_root, page.sessions.tmp_root):
            for f in Path(root).rglob("*"):
                if f.is_file():
                    assert a_key.encode() not in f.read_bytes(), f
        assert a_key not in json.dumps(st) and a_id not in json.dumps(st)

        # ---- B, through gradio_client ----------------------------------------------------------------------------
        # every key B could make up or find is refused: B gets a fresh session of its own
        for made_up in (a_id, a_id + "." + "f" * 32, a_ws.folder, a_ws.folder + "." + a_key.split(".")[1],
                        a_id[:8], "anonymous-session", run_dir.parent.name):
            b_key = b.predict(made_up, api_name="/init_session")[0]
            assert b_key != a_key and page.sessions.keys.verify(b_key) not in (None, a_id), made_up
        assert b.predict(api_name="/list_runs")[0]["choices"] == []
        for ref in (a_ref, str(run_dir)):
            with pytest.raises(Exception, match="among this session's folders"):
                b.predict(run=ref, prompt="hi", max_tokens=8, api_name="/chat")
            with pytest.raises(Exception, match="among this session's folders"):
                b.predict(run=ref, api_name="/export_adapter")
            with pytest.raises(Exception, match="among this session's folders"):
                b.predict(run=ref, api_name="/export_merged")
        with pytest.raises(Exception, match="among this session's folders"):
            b.predict(folder=str(run_dir.parent), api_name="/load_compare")
        assert b.predict(api_name="/job_status") == {"state": "idle"}

        # B cannot cancel A's job: A starts one, B's cancel finds none, A's finishes
        a.predict(domain="finance", file=None, method="direct", steps=3, batch_size=2, eval_every=0, eval_items=1,
                  api_name="/start_finetune")
        b.predict(api_name="/cancel_job")
        assert b.predict(api_name="/job_status") == {"state": "idle"}
        assert wait(a)["state"] == "completed"

        # ---- B, through raw HTTP ---------------------------------------------------------------------------------
        hb = "bbbbbbbbbbbb"
        kind, out = raw_call(url, "init_session", [a_id + "." + "0" * 32], hb)
        assert kind == "complete", out
        issued = [v for v in out if isinstance(v, str) and page.sessions.keys.verify(v)]  # (states come back None)
        assert issued and page.sessions.keys.verify(issued[0]) != a_id, out
        kind, out = raw_call(url, "list_runs", [], hb)
        assert kind == "complete" and out[0]["choices"] == [], out
        for api, data in (("chat", [a_ref, "hi", 8]), ("export_adapter", [str(run_dir)]),
                          ("export_merged", [a_ref])):
            kind, out = raw_call(url, api, data, hb)
            assert kind == "error", (api, out)
        kind, out = raw_call(url, "job_status", [], hb)
        assert kind == "complete" and out[0] == {"state": "idle"}
        a.predict(domain="finance", file=None, method="direct", steps=3, batch_size=2, eval_every=0, eval_items=1,
                  api_name="/start_finetune")
        kind, out = raw_call(url, "cancel_job", [], hb)  # B's cancel, while A's job is queued or running
        assert kind == "complete" and "No job running" in str(out), out
        assert wait(a)["state"] == "completed"
        # no file of A's is served: its stored upload, its run folder, its export folder
        for f in (stored_upload, run_dir / "config.json", run_dir / "adapter" / "adapter_model.safetensors",
                  next(a_ws.exports.glob("*.zip"))):
            assert f.exists()
            r = httpx.get(f"{url}/gradio_api/file={f}", timeout=30)
            assert r.status_code == 403, (f, r.status_code)
            assert b"Secret of A" not in r.content
        # what Gradio does hand out is its own cached copy, under a folder named by a secret-seeded hash of the
        # contents, told only to the session that asked (A here, through its own Gradio session)
        kind, out = raw_call(url, "export_adapter", [a_ref], a.session_hash)
        assert kind == "complete", out
        cached = Path(out[0]["path"])
        assert re.fullmatch(r"[0-9a-f]{64}", cached.parent.name), cached
        assert httpx.get(f"{url}/gradio_api/file={cached}", timeout=30).status_code == 200
        assert a_ws.folder not in str(cached) and a_id not in str(cached)
    finally:
        a.close()
        b.close()


def test_public_limits_are_refused_with_a_clear_message(app, tmp_path):
    _, _, url = app
    c = client(url, tmp_path)
    try:
        asks = [
            # (the sliders' ranges are the limits in public mode, so Gradio refuses these before the app does)
            (dict(steps=100), "maximum value 6|Steps is limited to 6"),
            (dict(batch_size=10**6), "maximum value 4|batch size is limited to 4"),
            (dict(lr=1e9), "between 1e-06 and 0.01.*DBA_STUDIO_LR_MAX"),
            (dict(lr=-1), "must be above 0"),
            (dict(eval_items=10**6), "Quiz questions is limited to 4"),
            (dict(eval_items=0), "0 = all is not offered"),
        ]
        for kw, message in asks:
            args = dict(domain="finance", file=None, method="direct", steps=2, batch_size=2, eval_items=2)
            args.update(kw)
            with pytest.raises(Exception, match=message):
                c.predict(**args, api_name="/start_finetune")
        with pytest.raises(Exception, match="limited to 3.*DBA_STUDIO_MAX_RUNS"):
            c.predict(domain="finance", methods=["direct", "mixture", "dba"], ratios="0.25, 0.5", steps=2,
                      batch_size=4, eval_items=2, api_name="/start_compare")
        with pytest.raises(Exception, match="maximum value 4|DBA_STUDIO_MAX_ANCHOR_BATCHES"):
            c.predict(source="general", file=None, batches=100, batch_size=2, energy=0.9, api_name="/start_anchor")
        # the model list is fixed: no hub ids, no server paths — refused at once, holding nothing
        for name in ("gpt2", "/etc", str(Path(sys.prefix))):
            t0 = time.time()
            with pytest.raises(Exception, match="not in the list of choices|offers the models default, tiny only"):
                c.predict(name, "none", 4, "cpu", api_name="/load_model")
            assert time.time() - t0 < 10
        with pytest.raises(Exception, match="minimum value 1|DBA_STUDIO_ALLOW_FULL"):
            c.predict("tiny", "none", 0, "cpu", api_name="/load_model")
        with pytest.raises(Exception, match="maximum value 8|DBA_STUDIO_MAX_RANK"):
            c.predict("tiny", "none", 64, "cpu", api_name="/load_model")
        assert c.predict(api_name="/job_status") == {"state": "idle"}  # nothing was queued
        # (what JSON cannot carry, NaN, is refused by the same checks when it reaches them another way)
        for fn, bad in ((check_lr, float("nan")), (check_steps, 2.5), (check_steps, "ten"), (check_model, "/etc"),
                        (check_model, "gpt2")):
            with pytest.raises(DBAError, match="finite|whole number|must be a number|offers the models default, tiny"):
                fn(app[1], bad)
    finally:
        c.close()


def _files_named(folder: Path, name: str) -> list[Path]:
    return [p for p in folder.rglob(name)] if folder.exists() else []


def test_oversized_uploads_are_refused_and_deleted(app, tmp_path):
    from gradio.utils import get_upload_folder

    _, settings, url = app
    gradio_dir = Path(get_upload_folder())
    # over the HTTP limit (Gradio's max_file_size = the larger of the two upload limits, 2 MB here): refused
    # while it streams in, nothing kept
    big = tmp_path / "too-big-for-http.jsonl"
    big.write_bytes(b'{"text": "x"}\n' * (3 * 2**20 // 14))
    with open(big, "rb") as f:
        r = httpx.post(f"{url}/gradio_api/upload", files={"files": (big.name, f)}, timeout=60)
    assert r.status_code == 413, (r.status_code, r.text[:200])
    assert "maximum allowed size" in r.text
    assert _files_named(gradio_dir, big.name) == []
    # under the HTTP limit but over the data limit (1 MB): refused by the app, Gradio's copy deleted too
    mid = tmp_path / "too-big-for-data.jsonl"
    mid.write_bytes(b'{"text": "x"}\n' * (int(1.5 * 2**20) // 14))
    c = client(url, tmp_path / "dl")
    try:
        with pytest.raises(Exception, match="largest upload accepted"):
            c.predict(handle_file(str(mid)), api_name="/check_domain_upload")
        assert _files_named(gradio_dir, mid.name) == []
        assert _files_named(Path(app[0].studio_page.sessions.tmp_root), mid.name) == []
    finally:
        c.close()
