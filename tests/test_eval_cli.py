"""dba eval: a base model, a run folder and an adapter on MC files; load_trained gives back the trained model; bad
inputs exit 2 with one message."""
import json

import pytest
import torch

from dba import LoraSettings
from dba.cli import main as cli_main
from dba.optim import AnnealConfig, DBAConfig
from dba.runs import load_trained
from dba.scores_cli import EvalSet, evaluate_sets
from dba.train import FinetuneConfig, finetune


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: with 2 threads on a busy 2-core machine OpenMP spin-waits cost ~50x (measured); 1 is faster."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaldata")
    mc = [{"question": f"What is {a} plus 1?", "choices": [str(a + 1), str(a + 7), "blue"], "answer": 0}
          for a in range(5)]
    (d / "sums.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mc))
    rows = [{"instruction": f"What is {a} plus 1?", "output": f"{a + 1}"} for a in range(8)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    """A short direct run on the tiny model, and the model it trained (kept in memory)."""
    out = tmp_path_factory.mktemp("evalrun") / "run"
    cfg = FinetuneConfig(method="direct", model="tiny", lora=LoraSettings(rank=4, alpha=8),
                         domain=str(files / "train.jsonl"), general=str(files / "train.jsonl"), steps=3,
                         batch_size=4, max_length=48, evaluate_at_end=False,
                         dba=DBAConfig(anneal=AnnealConfig(lr=5e-2)), output_dir=str(out))
    r = finetune(cfg, progress=False, keep_model=True)
    assert r.status == "completed"
    return out, r.loaded


def _logits(model, tok):
    ids = tok("What is 3 plus 1?", return_tensors="pt").input_ids
    with torch.no_grad():
        model.eval()
        return model(input_ids=ids).logits


def test_load_trained_gives_back_the_trained_model(trained):
    run_dir, lm = trained
    want = _logits(lm.model, lm.tokenizer)
    for path in (run_dir, run_dir / "adapter"):
        got = load_trained(path)
        assert got.name == "tiny"  # the adapter inside a run folder finds the run's base model
        torch.testing.assert_close(_logits(got.model, got.tokenizer), want)
    # and the trained model differs from the base one (the check above could not pass by accident)
    from dba.models import load_model

    base = load_model("tiny", lora=None)
    assert not torch.allclose(_logits(base.model, base.tokenizer), want)


def test_eval_base_model_table(files, capsys):
    rc = cli_main(["eval", "--model", "tiny", "--eval", str(files / "sums.jsonl"), "--max-items", "4"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("set"))
    assert lines[head].split()[:5] == ["set", "n", "loglik", "loglik-norm", "gen"]
    row = lines[head + 2].split()
    assert row[0] == "sums" and row[1] == "4"
    assert all(0.0 <= float(x) <= 100.0 for x in row[2:6])


def test_eval_run_folder_json_matches_the_trained_model(files, trained, capsys):
    run_dir, lm = trained
    rc = cli_main(["eval", "--run", str(run_dir), "--eval", str(files / "sums.jsonl"), "--scorer", "loglik",
                   "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0 and res["model"]["run"] == str(run_dir) and res["model"]["adapter"].endswith("adapter")
    (row,) = res["sets"]
    assert row["n"] == 5 and row["gen"] is None and row["score"] == row["loglik"]
    # the same numbers as scoring the in-memory trained model
    from dba.data import load_mc

    direct = evaluate_sets(lm.model, lm.tokenizer, [EvalSet("sums", str(files / "sums.jsonl"))], scorer="loglik",
                           items={str(files / "sums.jsonl"): load_mc(files / "sums.jsonl")})
    assert direct["sets"][0]["loglik"] == row["loglik"] and direct["sets"][0]["loglik_norm"] == row["loglik_norm"]


def test_eval_adapter_with_general_and_domain_gives_s(files, trained, tmp_path, capsys, monkeypatch):
    run_dir, _ = trained
    # stand-ins for the bundled sets, so the test does not depend on which bundled files exist yet
    import dba.data

    monkeypatch.setattr(dba.data, "bundled_path", lambda name, split="train": files / "sums.jsonl")
    rc = cli_main(["eval", "--adapter", str(run_dir / "adapter"), "--general", "--domain", "finance",
                   "--max-items", "2", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [s["name"] for s in res["sets"]] == ["general", "finance"]
    (j,) = res["joint"]
    g, d = res["sets"][0]["score"], res["sets"][1]["score"]
    assert j["s"] == pytest.approx(0.0 if g + d == 0 else 2 * g * d / (g + d))


@pytest.mark.parametrize("args, msg", [
    (["--model", "tiny", "--eval", "/nonexistent/mc.jsonl"], "not found"),
    (["--model", "tiny"], "Nothing to score"),
    (["--run", "{tmp}", "--eval", "{mc}"], "not a run folder"),
    (["--run", "{tmp}/missing", "--eval", "{mc}"], "not a run folder"),
    (["--adapter", "{tmp}", "--eval", "{mc}"], "not a PEFT adapter folder"),
    (["--run", "{unfinished}", "--eval", "{mc}"], "holds no result yet"),
    (["--run", "{tmp}", "--adapter", "{tmp}", "--eval", "{mc}"], "either --run or --adapter"),
    (["--model", "tiny", "--eval", "{bad}"], "missing key"),
])
def test_bad_inputs_exit_2_with_one_message(files, tmp_path, capsys, args, msg):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text(json.dumps({"method": "dba", "model": "tiny"}))
    (unfinished / "status.json").write_text(json.dumps({"status": "running"}))
    (tmp_path / "bad.jsonl").write_text(json.dumps({"question": "q", "choices": ["a", "b"]}) + "\n")
    fill = {"tmp": str(tmp_path), "mc": str(files / "sums.jsonl"), "unfinished": str(unfinished),
            "bad": str(tmp_path / "bad.jsonl")}
    rc = cli_main(["eval"] + [a.format(**fill) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert msg in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("dba eval: error:")
