"""Fine-tuning runs: run folders, cancel + resume = uninterrupted, the HF Trainer integration, the CLI end to end."""
import json
import threading

import pytest
import torch
from safetensors.torch import load_file

from dba import LoraSettings
from dba.cli import main as cli_main
from dba.errors import DBAError
from dba.optim import AnnealConfig, BoostConfig, DBAConfig, DBAOptimizer, annealed_lr
from dba.train import FinetuneConfig, finetune, read_run


@pytest.fixture()
def small_corpus(tmp_path):
    """A few instruction rows and MC items, so runs do not depend on the bundled data."""
    rows = [{"instruction": f"What is {a} plus {b}?", "output": f"{a} plus {b} is {a + b}."}
            for a in range(1, 5) for b in range(1, 4)]
    (tmp_path / "dom.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gen = [{"instruction": f"Name a colour number {i}.", "output": "Blue."} for i in range(8)]
    (tmp_path / "gen.jsonl").write_text("\n".join(json.dumps(r) for r in gen) + "\n")
    mc = [{"question": f"What is {a} plus 1?", "choices": [str(a + 1), str(a + 7)], "answer": 0} for a in range(3)]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in mc) + "\n")
    return tmp_path


def tiny_cfg(d, out, **kw):
    base = dict(method="dba", model="tiny", lora=LoraSettings(rank=4, alpha=8), domain=str(d / "dom.jsonl"),
                general=str(d / "gen.jsonl"), domain_eval=str(d / "mc.jsonl"), general_eval=str(d / "mc.jsonl"),
                steps=6, batch_size=3, anchor_batches=2, max_length=64, evaluate_at_end=False,
                dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=5e-3)), output_dir=str(out))
    base.update(kw)
    return FinetuneConfig(**base)


def test_run_folder_is_complete(small_corpus, tmp_path):
    r = finetune(tiny_cfg(small_corpus, tmp_path / "run", evaluate_at_end=True, eval_every=3), progress=False)
    assert r.status == "completed"
    run = read_run(r.run_dir)
    assert run["status"]["status"] == "completed" and run["status"]["tokens"] > 0
    steps = [m for m in run["metrics"] if m["type"] == "step"]
    evals = [m for m in run["metrics"] if m["type"] == "eval"]
    assert [m["step"] for m in steps] == list(range(6))
    assert [m["step"] for m in evals] == [0, 3, 6]
    for m in steps:
        assert -1 <= m["rho"] <= 1 and m["lam"] >= 1 and m["lr"] > 0 and m["gamma"] >= 0
    assert (r.run_dir / "adapter" / "adapter_config.json").exists()
    assert (r.run_dir / "anchor.safetensors").exists()
    assert run["config"]["anchor_info"]["path"].endswith("anchor.safetensors")
    assert not list(r.run_dir.glob(".*tmp*")), "temp files left behind"


def test_cancel_then_resume_equals_uninterrupted_run(small_corpus, tmp_path):
    full = finetune(tiny_cfg(small_corpus, tmp_path / "full"), progress=False)
    stop = threading.Event()

    def on_record(rec):
        if rec.get("type") == "step" and rec["step"] == 2:
            stop.set()

    cfg = tiny_cfg(small_corpus, tmp_path / "cut")
    part = finetune(cfg, cancel=stop, callback=on_record, progress=False)
    assert part.status == "cancelled" and part.steps_done == 3
    status = json.loads((tmp_path / "cut" / "status.json").read_text())
    assert status["status"] == "cancelled" and not (tmp_path / "cut" / "adapter").exists()
    done = finetune(cfg, resume=True, progress=False)
    assert done.status == "completed"
    a = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run differs from the uninterrupted one"
    steps = [m["step"] for m in read_run(tmp_path / "cut")["metrics"] if m["type"] == "step"]
    assert steps == list(range(6))


def test_existing_run_folder_is_not_overwritten(small_corpus, tmp_path):
    finetune(tiny_cfg(small_corpus, tmp_path / "r", steps=1), progress=False)
    with pytest.raises(DBAError, match="already holds a run"):
        finetune(tiny_cfg(small_corpus, tmp_path / "r", steps=1), progress=False)


def test_methods_share_data_order_and_mixture_mixes(small_corpus, tmp_path):
    seen = {}
    for method in ("direct", "mixture"):
        r = finetune(tiny_cfg(small_corpus, tmp_path / method, method=method, steps=2, mixture_ratio=1 / 3),
                     progress=False)
        seen[method] = r.metrics
        assert r.status == "completed"
    # direct: no boost, no correction, same annealed lr schedule as dba
    for m in seen["direct"]:
        assert m["gamma"] == 0 and m["lam"] == 1
    assert [m["lr"] for m in seen["direct"]] == [m["lr"] for m in seen["mixture"]]


def test_hf_trainer_applies_exactly_the_dba_learning_rates(small_corpus, tmp_path):
    from transformers import Trainer, TrainingArguments

    from dba import load_model
    from dba.data import collate, load_corpus
    from dba.global_gradient import estimate_global_gradient

    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8))
    corpus = load_corpus(small_corpus / "dom.jsonl", lm.tokenizer, 64)
    batches = [collate(corpus.examples[i:i + 3], lm.tokenizer.pad_token_id) for i in (0, 3)]
    anchor = estimate_global_gradient(lm.model, batches, progress=False)
    T = 3
    cfg = DBAConfig(total_steps=T, boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=1e-3))
    opt = DBAOptimizer(lm.model, anchor, cfg)
    records = []
    opt.add_callback(records.append)
    data = [{"input_ids": e.input_ids, "labels": e.labels} for e in corpus.examples]

    class Collator:
        def __call__(self, feats):
            from dba.data import Example
            return collate([Example(f["input_ids"], f["labels"]) for f in feats], lm.tokenizer.pad_token_id)

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=T, per_device_train_batch_size=2,
                             gradient_accumulation_steps=2, max_grad_norm=1.0, report_to=[], logging_steps=1,
                             save_strategy="no", use_cpu=True, remove_unused_columns=False, seed=0)
    trainer = Trainer(model=lm.model, args=args, train_dataset=data, data_collator=Collator(),
                      optimizers=(opt, opt.scheduler()))
    trainer.train()
    assert [r["step"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["lr"] == pytest.approx(annealed_lr(r["step"], T, cfg.anneal))
        assert r["effective_lr"] == pytest.approx(r["lr"] * r["lam"])
        assert r["grad_norm"] <= 1.0 + 1e-5, "Trainer clipped g_D before the DBA step"
    logged = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert logged == pytest.approx([r["effective_lr"] for r in records])


def test_cli_anchor_then_train_on_tiny_4bit_lora(small_corpus, tmp_path, capsys):
    anchor = tmp_path / "anchor.safetensors"
    rc = cli_main(["anchor", "--model", "tiny", "--quantization", "4bit", "--lora-rank", "4",
                   "--corpus", str(small_corpus / "gen.jsonl"), "--batches", "2", "--batch-size", "2",
                   "--max-length", "64", "-o", str(anchor)])
    assert rc == 0 and anchor.exists()
    assert "energy kept" in capsys.readouterr().out
    out = tmp_path / "run"
    rc = cli_main(["train", "--method", "dba", "--quick", "--model", "tiny", "--quantization", "4bit",
                   "--lora-rank", "4", "--anchor", str(anchor), "--domain", str(small_corpus / "dom.jsonl"),
                   "--domain-eval", str(small_corpus / "mc.jsonl"), "--general-eval", str(small_corpus / "mc.jsonl"),
                   "--steps", "2", "--batch-size", "2", "--max-length", "64", "--eval-items", "2", "-o", str(out)])
    assert rc == 0
    run = read_run(out)
    assert run["status"]["status"] == "completed"
    assert run["config"]["anchor_info"]["path"] == str(anchor)
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_cli_user_errors_exit_2_without_traceback(tmp_path, capsys):
    rc = cli_main(["train", "--model", "tiny", "--domain", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "missing.jsonl" in err
    rc = cli_main(["train", "--resume", str(tmp_path / "nothing")])
    assert rc == 2


def test_every_evaluation_logs_heldout_nll_equal_to_score_nll(small_corpus, tmp_path):
    """The eval records' held-out answer NLL per token is score_nll of the same model on the same pairs."""
    from dba.scores import load_qa_pairs, score_nll
    from dba.train import load_heldout_pairs

    gen = [{"question": f"Which colour is number {i}?", "answer": "Blue is that colour."} for i in range(3)]
    dom = [{"instruction": f"What is {a} plus 2?", "output": f"{a} plus 2 is {a + 2}."} for a in range(4)]
    (small_corpus / "gen_pairs.jsonl").write_text("\n".join(json.dumps(r) for r in gen) + "\n")
    (small_corpus / "dom_pairs.jsonl").write_text("\n".join(json.dumps(r) for r in dom) + "\n")
    cfg = tiny_cfg(small_corpus, tmp_path / "run", method="direct", evaluate_at_end=True, eval_every=3,
                   general_heldout=str(small_corpus / "gen_pairs.jsonl"),
                   domain_heldout=str(small_corpus / "dom_pairs.jsonl"))
    r = finetune(cfg, progress=False, keep_model=True)
    evals = [m for m in read_run(r.run_dir)["metrics"] if m["type"] == "eval"]
    assert [m["step"] for m in evals] == [0, 3, 6]
    for m in evals:
        for k in ("nll_g", "nll_d"):
            assert m[k] is not None and m[k] > 0
            lo, hi = m["ci"][k]
            assert lo <= m[k] <= hi
        assert m["detail"]["general"]["nll"]["n"] == 3 and m["detail"]["domain"]["nll"]["n"] == 4
    model, tok = r.loaded.model, r.loaded.tokenizer
    g_pairs, d_pairs = load_qa_pairs(small_corpus / "gen_pairs.jsonl"), load_qa_pairs(small_corpus / "dom_pairs.jsonl")
    assert evals[-1]["nll_g"] == pytest.approx(score_nll(model, tok, g_pairs).nll, rel=1e-5)
    assert evals[-1]["nll_d"] == pytest.approx(score_nll(model, tok, d_pairs).nll, rel=1e-5)
    with model.disable_adapter():  # the base model: LoRA off
        assert evals[0]["nll_d"] == pytest.approx(score_nll(model, tok, d_pairs).nll, rel=1e-5)
        assert evals[0]["nll_g"] == pytest.approx(score_nll(model, tok, g_pairs).nll, rel=1e-5)
    assert evals[-1]["nll_d"] != evals[0]["nll_d"]  # training moved it
    # defaults: a user corpus has no held-out pairs; a bundled one has its heldout_pairs.jsonl; "none" = off
    assert load_heldout_pairs(tiny_cfg(small_corpus, tmp_path / "x")) == ([], [])
    g, d = load_heldout_pairs(FinetuneConfig(domain="finance", general="general"))
    assert len(g) >= 20 and len(d) >= 20
    assert load_heldout_pairs(FinetuneConfig(domain="finance", general_heldout="none", domain_heldout="none")) == \
        ([], [])
