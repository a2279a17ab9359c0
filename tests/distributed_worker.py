"""One rank of tests/test_distributed.py, started by a launcher (``accelerate launch`` or ``torchrun``), never by
pytest itself. Usage: ``<launcher> tests/distributed_worker.py OUT_DIR``.

The launcher sets RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT; ``Accelerator()`` reads them and starts the gloo process
group (ACCELERATE_USE_CPU=1 in the environment makes it a MULTI_CPU run: see docs/scaling.md).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))                    # test_distributed
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # dba

from accelerate import Accelerator  # noqa: E402

from test_distributed import run  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    accelerator = Accelerator()
    with open(os.path.join(sys.argv[1], f"started-rank{accelerator.process_index}.txt"), "w") as f:
        f.write(f"rank {accelerator.process_index} of {accelerator.num_processes}: {accelerator.distributed_type}, "
                f"backend {torch.distributed.get_backend()}")
    try:
        run(accelerator.process_index, accelerator.num_processes, sys.argv[1], accelerator)
    finally:
        torch.distributed.destroy_process_group()
