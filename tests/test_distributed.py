"""DBA under data parallelism through Accelerate: 2 CPU processes (gloo), started by `accelerate launch` as a user
would, against one process on the same global batch; torchrun starts N processes too; and clear errors for the
layouts DBA does not support (FSDP, DeepSpeed, Megatron-LM)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dba import LoraSettings, load_model
from dba.distributed import UnsupportedParallelismError, check_supported, prepare, unsupported_reason, unwrap_model
from dba.errors import DBAError
from dba.global_gradient import estimate_global_gradient
from dba.optim import AnnealConfig, BoostConfig, DBAConfig, DBAOptimizer

WORKER = Path(__file__).with_name("distributed_worker.py")
WORLD = 2
PER_RANK = 2        # sequences per rank per batch; the global batch is WORLD × PER_RANK
STEPS = 3


def global_batches(n, seed, length=16, vocab=500):
    """Global batches of equal-length sequences with the same number of loss tokens in each, so the mean loss of a
    global batch equals the mean of the per-rank mean losses (what DDP's gradient averaging computes)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (WORLD * PER_RANK, length), generator=g)
        labels = ids.clone()
        labels[:, :3] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def shard(batch, index, world):
    rows = slice(index * PER_RANK, (index + 1) * PER_RANK) if world > 1 else slice(None)
    return {k: v[rows] for k, v in batch.items()}


def run(index, world, out_dir, accelerator=None):
    """Anchor (dense and streaming) + STEPS DBA steps; rank ``index`` of ``world`` sees its shard of each batch."""
    torch.manual_seed(0)
    lm = load_model("tiny", lora=LoraSettings(rank=4, alpha=8, dropout=0.0), device="cpu")
    model = lm.model
    anchor_data = [shard(b, index, world) for b in global_batches(2, seed=1)]
    domain_data = [shard(b, index, world) for b in global_batches(STEPS, seed=2)]
    dense = estimate_global_gradient(model, anchor_data, rank=None, energy=None, progress=False)
    cfg = DBAConfig(total_steps=STEPS, boost=BoostConfig(k0=0.5), anneal=AnnealConfig(lr=1e-2))
    opt = DBAOptimizer(model, dense, cfg)
    wrapped, wopt = (model, opt) if accelerator is None else prepare(accelerator, model, opt)
    # the streaming estimate through the DDP wrapper: estimate_global_gradient unwraps it
    streamed = estimate_global_gradient(wrapped, anchor_data, rank=3, energy=None, streaming=True, oversample=4,
                                        progress=False)
    records = []
    wrapped.train()
    for b in domain_data:
        loss = wrapped(**b).loss
        if accelerator is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 0.05)
        else:
            accelerator.backward(loss)
            accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 0.05)
        wopt.step()
        wopt.zero_grad()
        records.append(opt.last_record)
    from safetensors.torch import save_file

    tensors = {f"dense::{n}": dense.matrix(n).contiguous() for n in dense.names()}
    tensors.update({f"stream::{n}": streamed.matrix(n).contiguous() for n in streamed.names()})
    tensors.update({f"param::{n}": p.detach().clone().contiguous()
                    for n, p in unwrap_model(wrapped).named_parameters() if p.requires_grad})
    save_file(tensors, os.path.join(out_dir, f"rank{index}-of{world}.safetensors"))
    with open(os.path.join(out_dir, f"rank{index}-of{world}.json"), "w") as f:
        json.dump({"records": records, "dense_meta": {k: dense.meta[k] for k in ("batches", "tokens", "world_size")},
                   "type": type(wrapped).__name__}, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def started(out_dir) -> list[str]:
    """What each started process wrote about itself (a file per rank: their stdout lines would interleave)."""
    return [f.read_text() for f in sorted(Path(out_dir).glob("started-rank*.txt"))]


def launch(launcher: str, out_dir, world: int = WORLD) -> subprocess.CompletedProcess:
    """Start ``world`` CPU processes of tests/distributed_worker.py through a real launcher (the commands of
    docs/scaling.md). ``accelerate launch --cpu`` would start ONE process: --cpu selects accelerate's single-process
    launcher; --multi_gpu selects torchrun's, and ACCELERATE_USE_CPU=1 makes Accelerator() a MULTI_CPU (gloo) run."""
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "HF_HOME": str(Path(out_dir) / "hf_home")}  # no user accelerate config file may change the launch
    script = [str(WORKER), str(out_dir)]
    if launcher == "accelerate":
        cmd = [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(world),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port())] + script
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)] + script
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _load(out_dir, index, world):
    from safetensors.torch import load_file

    with open(os.path.join(out_dir, f"rank{index}-of{world}.json")) as f:
        info = json.load(f)
    return load_file(os.path.join(out_dir, f"rank{index}-of{world}.safetensors")), info


def test_two_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    done = launch("accelerate", tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert started(tmp_path) == [f"rank {i} of {WORLD}: DistributedType.MULTI_CPU, backend gloo" for i in range(WORLD)]
    run(0, 1, str(tmp_path))

    single, s_info = _load(tmp_path, 0, 1)
    assert s_info["dense_meta"] == {"batches": 2, "tokens": 2 * WORLD * PER_RANK * 16, "world_size": 1}
    torch.manual_seed(0)
    start = {f"param::{n}": p.detach() for n, p in
             load_model("tiny", lora=LoraSettings(rank=4, alpha=8)).model.named_parameters() if p.requires_grad}
    rank0, _ = _load(tmp_path, 0, WORLD)
    for index in range(WORLD):
        multi, m_info = _load(tmp_path, index, WORLD)
        assert m_info["type"] == "DistributedDataParallel"
        # the anchor is averaged across ranks, weighted by batches: the same mean over all batches, on every rank
        assert m_info["dense_meta"] == {"batches": 2 * WORLD, "tokens": 2 * WORLD * PER_RANK * 16,
                                        "world_size": WORLD}
        assert set(multi) == set(single)
        for key, ref in single.items():
            assert torch.equal(multi[key], rank0[key]), f"ranks disagree on {key}"  # replicas stay identical
            if key.startswith(("dense", "stream")):
                err = float((multi[key] - ref).norm() / ref.norm().clamp_min(1e-12))
                assert err < 1e-4, (index, key, err)
            else:
                # the adapter's movement over the steps, up to fp32 round-off (which Adam's per-element
                # normalisation amplifies for near-zero gradient entries)
                moved = (ref - start[key]).norm()
                assert moved > 0, key
                err = float((multi[key] - ref).norm() / moved)
                assert err < 1e-3, (index, key, err)
        # the first DBA steps: the same similarity, boost, correction and learning rate
        for a, b in zip(m_info["records"], s_info["records"]):
            for k in ("step", "gamma", "lr"):
                assert a[k] == b[k]
            for k in ("rho", "lam", "grad_norm", "anchor_norm"):
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-7), k


PROBE = """
import sys
from accelerate import Accelerator
a = Accelerator()
with open(f"{sys.argv[1]}/started-rank{a.process_index}.txt", "w") as f:
    f.write(f"rank {a.process_index} of {a.num_processes}: {a.distributed_type}")
"""


def test_torchrun_starts_n_cpu_processes(tmp_path, monkeypatch):
    # the other documented command, with a probe only (`accelerate launch` runs the full comparison above)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    monkeypatch.setattr(sys.modules[__name__], "WORKER", probe)
    done = launch("torchrun", tmp_path, world=3)
    assert done.returncode == 0, done.stderr[-3000:]
    assert started(tmp_path) == [f"rank {i} of 3: DistributedType.MULTI_CPU" for i in range(3)]


# ------------------------------------------------------------------------------------------------ unsupported layouts


class FullyShardedDataParallel(torch.nn.Module):  # stands in for torch's FSDP wrapper (detected by class name)
    def __init__(self, inner):
        super().__init__()
        self.inner = inner


class DeepSpeedEngine(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.module = inner


@pytest.mark.parametrize("var, word", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"),
                                       ("ACCELERATE_USE_MEGATRON_LM", "Megatron")])
def test_launch_with_fsdp_or_deepspeed_fails_clearly_at_start(monkeypatch, var, word):
    monkeypatch.setenv(var, "true")
    with pytest.raises(UnsupportedParallelismError, match=word) as e:
        check_supported()
    assert isinstance(e.value, DBAError) and "docs/scaling.md" in str(e.value)
    lm = load_model("tiny", lora=LoraSettings(rank=2, alpha=4))
    with pytest.raises(UnsupportedParallelismError):
        estimate_global_gradient(lm.model, global_batches(1, seed=0), progress=False)
    monkeypatch.delenv(var)
    anchor = estimate_global_gradient(lm.model, global_batches(1, seed=0), progress=False)
    monkeypatch.setenv(var, "true")
    with pytest.raises(UnsupportedParallelismError, match=word):  # the optimiser refuses too, before any step
        DBAOptimizer(lm.model, anchor, DBAConfig(total_steps=4))
    DBAOptimizer(lm.model, None, DBAConfig.direct(total_steps=4))  # direct needs no anchor map: allowed


def test_sharded_wrappers_and_accelerators_are_refused():
    inner = torch.nn.Linear(3, 3)
    assert unsupported_reason(torch.nn.Sequential(inner)) is None
    assert "FSDP" in unsupported_reason(FullyShardedDataParallel(inner))
    assert "DeepSpeed" in unsupported_reason(DeepSpeedEngine(inner))
    p = torch.nn.Parameter(torch.zeros(2))
    p.ds_id = 7  # what DeepSpeed ZeRO-3 puts on its partitioned parameters
    holder = torch.nn.Module()
    holder.w = p
    assert "sharded" in unsupported_reason(holder)
    split = torch.nn.Module()  # a model spread over devices (device_map), seen through its trainable parameters
    split.a = torch.nn.Parameter(torch.zeros(2))
    split.b = torch.nn.Parameter(torch.zeros(2, device="meta"))
    assert "2 devices" in unsupported_reason(split)

    class FakeAccelerator:
        distributed_type = "DistributedType.FSDP"

        def prepare(self, *a):  # must not be reached
            raise AssertionError("prepare() ran under FSDP")

    with pytest.raises(UnsupportedParallelismError, match="FSDP"):
        prepare(FakeAccelerator(), inner, torch.optim.SGD(inner.parameters(), lr=0.1))


def test_unwrap_model_strips_ddp_style_wrappers():
    inner = torch.nn.Linear(2, 2)
    wrapped = torch.nn.DataParallel(inner)
    assert unwrap_model(wrapped) is inner and unwrap_model(inner) is inner
