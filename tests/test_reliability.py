"""A run fails fast and clearly, survives SIGKILL, is deterministic, and keeps the security defaults."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from trl import DPOConfig

from dpo_recipes.train import make_parser, run_from_command_line

from .conftest import REPO

TINY = str(REPO / "recipes" / "zephyr_style" / "tiny.yaml")
QUIET = ["--eval_strategy", "no", "--judge", "", "--crosscheck", "false", "--logging_steps", "1",
         "--report_to", "none", "--max_train_samples", "480", "--max_eval_samples", "16"]  # fmt: skip


def _fails_fast(argv, match, limit_s=20.0):
    started = time.time()
    with pytest.raises(SystemExit, match=match) as raised:
        run_from_command_line(["--config", TINY, *QUIET, *argv], prog="dpo-recipes train")
    assert time.time() - started < limit_s  # no weights loaded, no training started
    assert raised.value.__cause__ is not None  # the underlying error is kept as the cause
    return str(raised.value)


def test_conversational_data_needs_a_chat_template(tmp_path, tiny_sft_path):
    plain_model = tmp_path / "no-template"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_sft_path)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(plain_model)
    (plain_model / "chat_template.jinja").unlink(missing_ok=True)
    shutil.copy(f"{tiny_sft_path}/config.json", plain_model)
    _fails_fast(["--model_name_or_path", str(plain_model), "--output_dir", str(tmp_path / "run")],
                r"no chat template: use an SFT/instruct checkpoint, or --dataset_format standard")  # fmt: skip


def test_max_length_beyond_the_context_and_an_unknown_judge_are_reported_together(tmp_path, tiny_sft_path):
    message = _fails_fast(["--max_length", "100000", "--judge", "gpt-judge", "--output_dir", str(tmp_path)],
                          "the run cannot start")  # fmt: skip
    assert "max_length 100000 exceeds the model's context" in message and "unknown judge 'gpt-judge'" in message


def test_missing_model_path_offline_hub_id_and_missing_split_fail_in_one_line(tmp_path, tiny_sft_path, monkeypatch):
    _fails_fast(["--model_name_or_path", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path)],
                r"model '.*nowhere': could not load the local path")  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails_fast(["--model_name_or_path", "someone/no-such-model", "--output_dir", str(tmp_path)],
                r"model 'someone/no-such-model': not a local file or directory, and offline mode is on")  # fmt: skip
    _fails_fast(["--dataset_test_split", "validation", "--output_dir", str(tmp_path)],
                r"toy-world\[validation\]': no such split")  # fmt: skip


def test_all_pairs_dropped_is_an_error_before_training(tmp_path, tiny_sft_path):
    data = tmp_path / "ties.jsonl"
    user = {"role": "user", "content": "Hi"}
    row = {"prompt": "Hi", "chosen": [user, {"role": "assistant", "content": "A"}], "score_chosen": 5.0,
           "rejected": [user, {"role": "assistant", "content": "B"}], "score_rejected": 5.0}  # fmt: skip
    data.write_text(json.dumps(row) + "\n")
    splits = ["--dataset_train_split", "train", "--dataset_test_split", "train"]
    _fails_fast(["--dataset_name", str(data), *splits, "--output_dir", str(tmp_path / "run")],
                r"no usable pairs in the train split: .*1 tied scores")  # fmt: skip


def _launch(output_dir, *extra) -> subprocess.Popen:
    command = [sys.executable, str(REPO / "recipes" / "zephyr_style.py"), "--config", TINY, *QUIET,
               "--max_steps", "30", "--save_steps", "5", "--save_total_limit", "3", "--output_dir", str(output_dir),
               *extra]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    return output


def _losses(run_dir) -> dict[int, float]:
    state = json.loads((run_dir / "trainer_state.json").read_text())
    return {log["step"]: log["loss"] for log in state["log_history"] if "loss" in log}


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_sft_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    _finish(_launch(whole))

    process = _launch(killed)
    while not (killed / "checkpoint-10" / "trainer_state.json").is_file():
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "adapter_model.safetensors").exists() and not (killed / "metrics.json").exists()
    partial = killed / "checkpoint-999"  # what a kill in the middle of a checkpoint save leaves
    partial.mkdir()
    (partial / "adapter_model.safetensors").write_bytes(b"\x00" * 100)

    log = _finish(_launch(killed, "--resume_from_checkpoint", "last"))
    assert "Ignoring" in log and "checkpoint-999" in log and "Resuming from" in log
    resumed_from = int(log.split("Resuming from")[1].split("checkpoint-")[1].split()[0])
    assert 10 <= resumed_from < 30

    expected, actual = load_file(whole / "adapter_model.safetensors"), load_file(killed / "adapter_model.safetensors")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)  # bit-identical on CPU
    assert _losses(killed) == _losses(whole)  # the resumed log carries the pre-kill steps from its checkpoint
    assert not list(killed.glob(".final-model.partial"))


@pytest.mark.slow
def test_same_seed_same_config_same_loss_curve(tmp_path, tiny_sft_path):
    runs = []
    for name in ("a", "b"):
        argv = ["--config", TINY, *QUIET, "--max_steps", "8", "--save_strategy", "no", "--output_dir",
                str(tmp_path / name)]  # fmt: skip
        run_from_command_line(argv)
        runs.append(_losses(tmp_path / name))
    assert len(runs[0]) == 8 and runs[0] == runs[1]
    assert len(set(runs[0].values())) > 1  # the curve moves, so equality is not trivial


def test_security_defaults():
    _, training_args, _ = make_parser().parse_args_and_config(["--config", TINY])
    assert training_args.trust_remote_code is False and DPOConfig(output_dir="x", bf16=False).trust_remote_code is False
    source = "\n".join(path.read_text() for path in (REPO / "dpo_recipes").rglob("*.py"))
    for unsafe in ("torch.load(", "pickle.load", "trust_remote_code=True"):
        assert unsafe not in source, unsafe
    assert not re.search(r"(?<![\w.])(eval|exec)\(", source)  # builtins; model.eval() is fine


@pytest.mark.slow
def test_outputs_are_safetensors_and_carry_no_secrets(tmp_path, tiny_sft_path):
    secret = "hf_NOTAREALTOKEN1234567890"
    argv = ["--config", TINY, *QUIET, "--max_steps", "2", "--save_strategy", "no", "--output_dir", str(tmp_path),
            "--hub_token", secret]  # fmt: skip
    run_from_command_line(argv)
    assert (tmp_path / "adapter_model.safetensors").is_file() and not (tmp_path / "adapter_model.bin").exists()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json", ".txt", ".jinja"):
            assert secret not in path.read_text(errors="replace"), path
