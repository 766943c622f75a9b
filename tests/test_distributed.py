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
