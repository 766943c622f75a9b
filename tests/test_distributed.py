"""A real 2-process data-parallel run on CPU (gloo) trains the same adapter as 1 process with the same global batch.

`accelerate launch --cpu --num_processes 2` silently runs one process on this kind of machine, so the test
launches with `torchrun --nproc_per_node 2` (accelerate then sees MULTI_CPU) and checks the world size.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from .conftest import REPO

TINY = str(REPO / "recipes" / "zephyr_style" / "tiny.yaml")
COMMON = [
    "--config",
    TINY,
    "--max_steps",
    "4",
    "--max_train_samples",
    "128",
    "--max_eval_samples",
    "16",
    "--eval_strategy",
    "no",
    "--save_strategy",
    "no",
    "--judge",
    "",
    "--crosscheck",
    "false",
    "--use_cpu",
    "true",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
]
# Same data, same global batch of 16 pairs per step. Float32 sums in another order (two half-batches, padded
# separately, then an all-reduce) differ by ~1e-7, and Adam's division by sqrt(v) amplifies that over four
# steps: measured max |difference| 2.3e-6 on weights of order 1e-2, logged losses equal to 7 digits.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def _train(launcher: list[str], output_dir, batch_size: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        *launcher,
        str(REPO / "recipes" / "zephyr_style.py"),
        *COMMON,
        "--output_dir",
        str(output_dir),
        "--per_device_train_batch_size",
        str(batch_size),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((output_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_two_cpu_processes_train_the_same_adapter_as_one(tmp_path, tiny_sft_path):
    one = _train([sys.executable], tmp_path / "one", batch_size=16)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = _train(torchrun, tmp_path / "two", batch_size=8)

    assert (one["run"]["world_size"], two["run"]["world_size"]) == (1, 2)
    single = load_file(tmp_path / "one" / "adapter_model.safetensors")
    parallel = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert single.keys() == parallel.keys()
    for name in single:
        torch.testing.assert_close(parallel[name], single[name], **TOLERANCE, msg=name)
    moved = [name for name in single if "lora_B" in name and single[name].abs().sum() > 0]
    assert moved  # the runs trained (PEFT starts B at zero), so equal adapters mean equal training

    def losses(run):
        state = json.loads((tmp_path / run / "trainer_state.json").read_text())
        return [log["loss"] for log in state["log_history"] if "loss" in log]

    assert len(losses("one")) == 4
    assert losses("two") == pytest.approx(losses("one"), rel=1e-4)


# FSDP2: accelerate runs its FSDP plugin only on GPU-like devices, so on CPU the recipe refuses the FSDP config
# (preflight.sharding_problems) and tests/fsdp2_worker.py shards the recipe's trainer with torch's fully_shard
# directly, as accelerate's FSDP2 plugin would. Measured: LoRA max |Δ| 2.3e-7, full 1.8e-6 after 4 AdamW steps.
WORKER = str(REPO / "tests" / "fsdp2_worker.py")
TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _worker(launcher: list[str], output_dir, *flags: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [*launcher, WORKER, str(output_dir), *flags], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((output_dir / "losses.json").read_text())


def _assert_same_weights(a, b, **tolerance) -> None:
    left, right = load_file(a / "weights.safetensors"), load_file(b / "weights.safetensors")
    assert left.keys() == right.keys() and left
    for name in left:
        torch.testing.assert_close(right[name], left[name], **tolerance, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["lora", "full"])
def test_fsdp2_sharded_training_equals_one_process(tmp_path, tiny_sft_path, policy):
    one = _worker([sys.executable], tmp_path / "one", "--policy", policy)
    two = _worker(TORCHRUN_2, tmp_path / "two", "--policy", policy)
    assert (one["world"], two["world"]) == (1, 2)
    assert two["parameter_types"] == ["DTensor"]  # every parameter sharded
    assert not two["reference_in_train_mode"]  # the full fine-tune's separate reference runs in eval mode
    assert len(two["losses"]) == 4 and two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert one["losses"][-1] < one["losses"][0]  # it trained
    _assert_same_weights(tmp_path / "one", tmp_path / "two", **TOLERANCE)


@pytest.mark.slow
def test_fsdp2_sharded_checkpoint_resumes_where_it_stopped(tmp_path, tiny_sft_path):
    whole = _worker(TORCHRUN_2, tmp_path / "whole", "--policy", "full")
    first = _worker(TORCHRUN_2, tmp_path / "first", "--policy", "full", "--stop-after", "2")
    assert sorted(p.name for p in (tmp_path / "first" / "checkpoint").glob("*.distcp")) == [
        "__0_0.distcp",
        "__1_0.distcp",
    ]  # one shard per rank
    resumed = _worker(
        TORCHRUN_2, tmp_path / "resumed", "--policy", "full", "--resume", str(tmp_path / "first" / "checkpoint")
    )
    assert first["losses"] + resumed["losses"] == pytest.approx(whole["losses"], rel=1e-6)
    _assert_same_weights(tmp_path / "whole", tmp_path / "resumed", rtol=0, atol=1e-6)
    with pytest.raises(AssertionError):  # the stopped run's weights are not the finished ones
        _assert_same_weights(tmp_path / "whole", tmp_path / "first", rtol=0, atol=1e-6)


def test_an_fsdp_launch_without_a_gpu_is_refused_not_silently_run_as_ddp():
    from trl import DPOConfig

    from dpo_recipes.preflight import sharding_problems

    args = DPOConfig(output_dir="/tmp/unused", use_cpu=True, report_to="none")
    assert "silently run plain data parallelism" in sharding_problems(args, {"ACCELERATE_USE_FSDP": "true"})[0]
    assert sharding_problems(args, {}) == []
    args.use_cpu = False  # as on a GPU machine
    assert sharding_problems(args, {"ACCELERATE_USE_FSDP": "true"}, accelerator=True) == []
    assert sharding_problems(args, {"ACCELERATE_USE_FSDP": "true"}, accelerator=False) != []
