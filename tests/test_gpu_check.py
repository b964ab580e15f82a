"""The CUDA benchmarks and `rlmpc.bench.gpu_check`: their CPU parts here, the CUDA ones where a
GPU is (``-m gpu``)."""

import pytest
import torch

from rlmpc.bench import main as bench
from rlmpc.bench.gpu_check import main as gpu_check
from rlmpc.bench.update import main as bench_update


def test_planner_bench_times_one_backend_without_a_ratio():
    figures = bench(["planner", "--backends", "batched", "--batch-sizes", "8", "--min-seconds", "0.05",
                     "--repeats", "1", "--num-samples", "16", "--horizon", "5"])  # fmt: skip
    assert figures["planner_B8_batched_env_steps_per_s"] > 0
    assert not any("pytorch_mppi" in k or "ratio" in k for k in figures)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_gpu_check_refuses_without_cuda():
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check([])
    with pytest.raises(SystemExit, match="no CUDA device"):
        bench_update(["--device", "cuda", "--iters", "1"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_benchmarks_run():
    planner = bench(["planner", "--device", "cuda", "--backends", "batched", "--batch-sizes", "64",
                     "1024", "--min-seconds", "0.1", "--repeats", "2"])  # fmt: skip
    assert planner["planner_B1024_batched_env_steps_per_s"] > 0
    update = bench_update(["--device", "cuda", "--iters", "1", "--engines", "fused", "autograd"])
    assert update["learner_update_s"] > 0 and "learner_floor_s" not in update
