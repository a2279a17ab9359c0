"""Shared test setup.

One intra-op thread: the tests mostly run tiny models, where OpenMP's spin-waiting across two threads costs far more
than it gains (a 64×64 matmul measured 50× slower with 2 threads on a busy 2-core machine), and the app and notebook
tests run a second process beside pytest.
"""
import torch

torch.set_num_threads(1)
