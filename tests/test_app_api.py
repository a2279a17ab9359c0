"""DBA Studio driven through its API (gradio_client), as a script or another program would: the tiny model,
anchor → fine-tune → compare → export, plus the errors a user can cause (bad upload, anchor of another model,
a second job while one runs) and cancel. The app runs in-process on a free local port."""
from __future__ import annotations

import json
import socket
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the app/ package sits at the repo root
from app import launch  # noqa: E402
from app.settings import StudioSettings  # noqa: E402
from app.uploads import UploadError, sanitise_name, store_upload  # noqa: E402

WAIT = 300  # seconds a job may take on a busy 2-core machine (they take ~5-30 s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    runs = tmp_path_factory.mktemp("studio-runs")
    settings = StudioSettings(model="tiny", preset_name="smoke", host="127.0.0.1", port=free_port(), runs_root=runs,
                              upload_mb=1, device="cpu")
    demo, (_, url, _) = launch(settings, prevent_thread_lock=True, quiet=True)
    client = Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    yield client, settings, url
    client.close()
    demo.close()


def wait(client, timeout=WAIT) -> dict:
    st = client.predict(timeout, api_name="/wait_job")
    assert st["state"] in ("completed", "cancelled", "failed"), st
    print(f"  job {st['title']!r}: {st['state']} in {st['elapsed_s']} s")
    return st


def load(client, name="tiny", rank=4, device="cpu") -> dict:
    """Load a model through the Model tab (a job like any other) and wait for it."""
    client.predict(name, "none", rank, device, api_name="/load_model")
    return wait(client)


def test_upload_names_are_sanitised_and_sizes_limited(tmp_path):
    assert sanitise_name("../../etc/passwd") == "passwd"
    assert sanitise_name("..\\..\\evil.jsonl") == "evil.jsonl"
    assert sanitise_name("my data (v2).jsonl") == "my_data_v2.jsonl"
    assert sanitise_name(".hidden.csv") == "hidden.csv"
    assert sanitise_name("") == "upload"
    assert "/" not in sanitise_name("a/" * 200 + "x.jsonl") and len(sanitise_name("y" * 500 + ".jsonl")) <= 80
    src = tmp_path / "big.jsonl"
    src.write_bytes(b'{"text": "x"}\n' * 1000)
    dest_dir = tmp_path / "uploads"
    with pytest.raises(UploadError, match="largest upload"):
        store_upload(src, dest_dir, allowed=(".jsonl",), max_bytes=100)
    with pytest.raises(UploadError, match="unsupported file type"):
        store_upload(src, dest_dir, allowed=(".csv",), max_bytes=10**6)
    stored = store_upload(src, dest_dir, allowed=(".jsonl",), max_bytes=10**6, original_name="../../x/../a b.jsonl")
    assert stored.parent == dest_dir.resolve() and stored.name == "a_b.jsonl"


def test_workflow_anchor_finetune_compare_export(studio, tmp_path):
    client, settings, _ = studio
    t0 = time.time()
    st = load(client)
    assert st["state"] == "completed", st["error"]
    summary = st["result"]["summary"]
    assert summary["name"] == "tiny" and "LoRA" in summary["mode"], summary
    if not torch.cuda.is_available():  # an option that needs a GPU, on a machine without one: a clear message
        st = load(client, device="cuda")
        assert st["state"] == "failed" and "no CUDA GPU" in st["error"], st
        assert load(client)["state"] == "completed"

    # a wrong upload is refused with the engine's DataError message, and the app keeps serving
    bad = tmp_path / "bad columns.csv"
    bad.write_text("question,reply\nWhat?,That.\n")
    with pytest.raises(Exception, match="row 1"):
        client.predict(handle_file(str(bad)), api_name="/check_domain_upload")
    good = tmp_path / "my domain.jsonl"
    good.write_text("\n".join(json.dumps({"instruction": f"What is {i}+{i}?", "output": str(2 * i)})
                              for i in range(12)) + "\n")
    message, selected = client.predict(handle_file(str(good)), api_name="/check_domain_upload")
    assert "12 rows" in message and selected == "my upload"

    # 1. the global gradient
    client.predict(source="general", file=None, batches=2, batch_size=4, energy=0.9, api_name="/start_anchor")
    st = wait(client)
    assert st["state"] == "completed", st["error"]
    anchor = Path(st["result"]["anchor"])
    assert anchor.exists() and settings.runs_root in anchor.parents
    assert st["result"]["summary"]["batches"] == 2

    # 2. a DBA fine-tune that uses it, on the uploaded domain file
    client.predict(domain="my upload", file=handle_file(str(good)), method="dba", steps=2, batch_size=4,
                   eval_every=0, eval_items=2, api_name="/start_finetune")
    with pytest.raises(Exception, match="already running"):  # one job at a time per session
        client.predict(domain="finance", file=None, method="direct", steps=2, api_name="/start_finetune")
    st = wait(client)
    assert st["state"] == "completed", st["error"]
    run_dir = Path(st["result"]["run_dir"])
    assert (run_dir / "adapter").is_dir() and st["runs"][0]["steps_done"] == 2
    config = json.loads((run_dir / "config.json").read_text())
    assert config["anchor"] == str(anchor) and Path(config["domain"]).name == "my_domain.jsonl"
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps if m["type"] == "step"] == [0, 1]
    assert all(m["rho"] is not None for m in steps if m["type"] == "step")

    # 3. a comparison (two methods, reusing the session's anchor), then its folder loaded back
    client.predict(domain="finance", methods=["direct", "dba"], ratios="", steps=2, batch_size=4, eval_items=2,
                   api_name="/start_compare")
    st = wait(client)
    assert st["state"] == "completed", st["error"]
    folder = st["result"]["compare_dir"]
    md, table, *_ = client.predict(folder=folder, api_name="/load_compare")
    methods = [row[table["headers"].index("method")] for row in table["data"]]
    assert {"direct", "dba"} <= set(methods)
    with pytest.raises(Exception, match="among this session's folders"):  # typed paths cannot wander
        client.predict(folder="/etc", api_name="/load_compare")

    # 4. export: the adapter of the fine-tune as a zip
    zpath = client.predict(run=str(run_dir), api_name="/export_adapter")
    with zipfile.ZipFile(zpath) as z:
        names = set(z.namelist())
    # the library's shareable export (dba.export.export_run): model card and training config beside the adapter
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "dba-run/config.json"} <= names
    base, tuned = client.predict(run=str(run_dir), prompt="What is 2+2?", max_tokens=8, api_name="/chat")
    assert isinstance(base, str) and isinstance(tuned, str)
    print(f"\nAPI workflow (anchor, fine-tune, compare, export) took {time.time() - t0:.1f} s")


def test_cancel_stops_at_the_next_step_and_sessions_queue(studio):
    client, _, url = studio
    load(client)
    client.predict(domain="finance", file=None, method="direct", steps=500, batch_size=2, eval_every=0,
                   eval_items=1, api_name="/start_finetune")
    deadline = time.time() + WAIT
    while time.time() < deadline:
        st = client.predict(api_name="/job_status")
        if st["runs"] and st["runs"][0]["steps_done"] >= 1:
            break
        time.sleep(0.5)
    # another session's job waits its turn on the machine
    other = Client(url, verbose=False)
    try:
        other.predict(source="general", file=None, batches=1, batch_size=2, energy=0.9, api_name="/start_anchor")
        queued = other.predict(api_name="/job_status")
        assert queued["state"] == "queued" and queued["queue_position"] == 1, queued
        client.predict(api_name="/cancel_job")
        st = wait(client)
        assert st["state"] == "cancelled", st
        run_dir = Path(st["runs"][0]["run_dir"])
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "cancelled" and 1 <= status["step"] < 500
        assert (run_dir / "checkpoint" / "state.json").exists()  # consistent and resumable
        assert wait(other)["state"] == "completed"  # then the queued job runs
    finally:
        other.close()


def test_anchor_of_another_model_is_refused(studio, tmp_path):
    client, _, _ = studio
    from dba.models import tiny_checkpoint

    load(client)
    client.predict(source="general", file=None, batches=1, batch_size=2, energy=0.9, api_name="/start_anchor")
    st = wait(client)
    assert st["state"] == "completed", st["error"]
    anchor_of_tiny = st["result"]["anchor"]
    other = tiny_checkpoint(seed=1)  # same architecture, other weights
    assert load(client, str(other))["state"] == "completed"
    client.predict(handle_file(st["result"]["anchor"]), api_name="/load_anchor")  # checked in a job (loads a model)
    st = wait(client)
    assert st["state"] == "failed" and "does not fit the model" in st["error"], st
    load(client)  # the app still serves; the anchor fits the model it was made for
    client.predict(handle_file(anchor_of_tiny), api_name="/load_anchor")
    st = wait(client)
    assert st["state"] == "completed" and st["result"]["anchor"].endswith(".safetensors"), st


@pytest.mark.parametrize("name", ["smoke", "quick", "lesson"])
def test_the_app_builds_the_same_configs_as_the_cli(name, tmp_path):
    """The lesson's runs, the Fine-tune form's start values and the Compare form's start values give the configs that
    ``dba compare`` / ``dba train`` / ``dba compare --preset NAME`` build (one preset, :mod:`dba.config`)."""
    from app import tasks, teaching
    from app.tabs import finetune
    from app.tabs.common import Ctx
    from app.ui import build_demo
    from dba.cli import build_parser
    from dba.cli.compare import config_from_args as compare_from_args
    from dba.cli.train import config_from_args as train_from_args
    from dba.config import preset, to_dict
    from dba.lesson import lesson_compare_config

    pre = preset(name)
    settings = StudioSettings(model=pre.run.model, preset_name=name, runs_root=tmp_path / "runs")
    demo = build_demo(settings)
    page, tabs = demo.studio_page, demo.studio_tabs
    ws = page.sessions.workspace("e" * 32)

    def cli_train(*argv):
        return train_from_args(build_parser().parse_args(["train", "--preset", name, *argv]))

    def same(app_cfg, cli_cfg, *, skip=("output_dir",)):
        a, c = to_dict(app_cfg), to_dict(cli_cfg)
        for k in skip:
            a.pop(k), c.pop(k)
        assert a == c

    # the lesson: the Studio's lesson preset, planned by the library as `dba compare` plans it
    lesson = lesson_compare_config(teaching.lesson_config(ws, "finance", tmp_path / "lesson"))
    cli_lesson = compare_from_args(build_parser().parse_args(
        ["compare", "--preset", settings.lesson_preset_name, "--domains", "finance", "--model", ws.model.name,
         "--methods", ",".join(lesson.methods), "--eval-every", str(lesson.run.eval_every),
         "--general-heldout", "none", "--domain-heldout", "none"]))
    # the lesson keeps no weights (a comparison's runs always do: there is no flag for it)
    assert lesson.run.save_weights is False and cli_lesson.run.save_weights is True
    same(lesson.run, cli_lesson.run, skip=("output_dir", "save_weights"))
    # the Fine-tune tab's Start with its start values
    t = tabs["finetune"]
    values = [t.domain, None, t.method, t.steps, t.bs, t.lr, t.eval_every, t.eval_items, t.ratio, t.boost_mode, t.k0,
              t.k0_max, t.decay, t.scale, t.dc, t.beta, t.lam_min, t.lam_max, t.schedule, t.ablate, t.seed]
    ctx = Ctx(settings=settings, page=page, sid=None, job_html=None)
    app_cfg = finetune.config_from(ctx, ws, *[v if v is None else v.value for v in values])
    same(app_cfg, cli_train("--method", app_cfg.method, "--eval-every", str(app_cfg.eval_every)))
    # the Compare tab's Run with its start values
    c = tabs["compare"]
    app_cmp = tasks.compare_config(ws, pre, tmp_path / "cmp", domain=c.domain.value, methods=c.methods.value,
                                   ratios=tuple(float(r) for r in c.ratios.value.split(",")), lr=c.lr.value,
                                   steps=c.steps.value, batch_size=c.bs.value,
                                   eval_items=c.eval_items.value or None)
    cli_cmp = compare_from_args(build_parser().parse_args(
        ["compare", "--preset", name, "--domains", "finance", "--methods", ",".join(c.methods.value)]))
    same(app_cmp.run, cli_cmp.run)
    assert (app_cmp.domains, app_cmp.methods, app_cmp.ratios) == (cli_cmp.domains, cli_cmp.methods, cli_cmp.ratios)
    # LoRA α is the library's decision (None = 2 × rank) everywhere
    if pre.run.lora is not None:
        assert app_cfg.lora.alpha is None and app_cfg.lora.effective_alpha == 2 * pre.run.lora.rank
