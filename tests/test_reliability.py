"""A run fails fast and clearly, survives SIGKILL, is deterministic, and keeps the security defaults."""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trl import DPOConfig

from dpo_recipes.training.train import make_parser, run_from_command_line

from .conftest import REPO, TINY, run_flags

QUIET = run_flags(
    {"eval_strategy": "no", "judge": "", "crosscheck": "false", "logging_steps": 1, "report_to": "none"},
    max_train_samples=480,
    max_eval_samples=16,
)


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
    _fails_fast(
        ["--model_name_or_path", str(plain_model), "--output_dir", str(tmp_path / "run")],
        r"no chat template: use an SFT/instruct checkpoint, or --dataset_format standard",
    )


def test_max_length_beyond_the_context_and_an_unknown_judge_are_reported_together(tmp_path, tiny_sft_path):
    message = _fails_fast(
        ["--max_length", "100000", "--judge", "gpt-judge", "--output_dir", str(tmp_path)], "the run cannot start"
    )
    assert "max_length 100000 exceeds the model's context" in message and "unknown judge 'gpt-judge'" in message


def test_missing_model_path_offline_hub_id_and_missing_split_fail_in_one_line(tmp_path, tiny_sft_path, monkeypatch):
    _fails_fast(
        ["--model_name_or_path", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path)],
        r"model '.*nowhere': could not load the local path",
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fails_fast(
        ["--model_name_or_path", "someone/no-such-model", "--output_dir", str(tmp_path)],
        r"model 'someone/no-such-model': not a local file or directory, and offline mode is on",
    )
    _fails_fast(
        ["--dataset_test_split", "validation", "--output_dir", str(tmp_path)],
        r"toy-world\[validation\]': no such split",
    )


def test_all_pairs_dropped_is_an_error_before_training(tmp_path, tiny_sft_path):
    data = tmp_path / "ties.jsonl"
    user = {"role": "user", "content": "Hi"}
    row = {
        "prompt": "Hi",
        "chosen": [user, {"role": "assistant", "content": "A"}],
        "score_chosen": 5.0,
        "rejected": [user, {"role": "assistant", "content": "B"}],
        "score_rejected": 5.0,
    }
    data.write_text(json.dumps(row) + "\n")
    splits = ["--dataset_train_split", "train", "--dataset_test_split", "train", "--allow_eval_on_train", "true"]
    _fails_fast(
        ["--dataset_name", str(data), *splits, "--output_dir", str(tmp_path / "run")],
        r"no usable pairs in the train split: .*1 tied scores",
    )


def _launch(output_dir, *extra) -> subprocess.Popen:
    command = [
        sys.executable,
        str(REPO / "recipes" / "zephyr_style.py"),
        "--config",
        TINY,
        *QUIET,
        "--max_steps",
        "30",
        "--save_steps",
        "5",
        "--save_total_limit",
        "3",
        "--output_dir",
        str(output_dir),
        *extra,
    ]
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
        argv = [
            "--config",
            TINY,
            *QUIET,
            "--max_steps",
            "8",
            "--save_strategy",
            "no",
            "--output_dir",
            str(tmp_path / name),
        ]
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
    argv = [
        "--config",
        TINY,
        *QUIET,
        "--max_steps",
        "2",
        "--save_strategy",
        "no",
        "--output_dir",
        str(tmp_path),
        "--hub_token",
        secret,
    ]
    run_from_command_line(argv)
    assert (tmp_path / "adapter_model.safetensors").is_file() and not (tmp_path / "adapter_model.bin").exists()
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.suffix in (".md", ".json", ".txt", ".jinja"):
            assert secret not in path.read_text(errors="replace"), path


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--beta", "-0.3"], r"beta -0.3 must be > 0: .* trains the reverse preference"),
        (["--beta", "0"], r"beta 0 must be > 0"),
        (["--learning_rate=-1e-4"], r"learning_rate -0.0001 must be > 0"),
        (["--max_length", "1"], r"max_length 1 cannot hold a prompt and an answer: .* \(valid: ≥ \d+, or unset\)"),
        (["--label_smoothing", "0.7"], r"label_smoothing 0.7 must be in \[0, 0.5\)"),
        (["--judge", "toy-world", "--win_rate_temperatures", "-1"], r"win_rate_temperatures \[-1.0\] must be ≥ 0"),
        (["--judge", "toy-world", "--win_rate_prompts", "0"], r"win_rate_prompts 0 must be ≥ 1"),
        (["--on_bad_row", "ignore"], r"on_bad_row 'ignore' must be one of error, skip"),
        (["--torch_threads", "0"], r"torch_threads 0 must be ≥ 1"),
        (["--max_tokens_per_batch", "0"], r"max_tokens_per_batch 0 must be ≥ 1"),
        (
            ["--dataset_recipe_options", '{"keep_ties": "false"}'],
            r"option 'keep_ties' must be true/false, got str 'false'",
        ),
        (
            ["--dataset_recipe_options", "{keep_tie: true}"],
            r"recipe 'ultrafeedback_binarized' has no option 'keep_tie'; its options: keep_ties \(true/false\)",
        ),
        (["--dataset_recipe_options", "{keep_ties: [oops"], r"dataset_recipe_options .* is neither YAML nor JSON"),
    ],
)
def test_meaningless_settings_are_refused_before_any_weights_load(tmp_path, tiny_sft_path, argv, match):
    with pytest.raises(SystemExit, match=match):
        run_from_command_line(["--config", TINY, *QUIET, *argv, "--output_dir", str(tmp_path)])
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_recipe_options_as_a_yaml_mapping_are_read(tmp_path):
    from dpo_recipes.training.preflight import recipe_options

    config = tmp_path / "preset.yaml"
    config.write_text(Path(TINY).read_text() + "\ndataset_recipe_options:\n  keep_ties: true\n")
    script_args, _, _ = make_parser().parse_args_and_config(["--config", str(config)])
    assert recipe_options(script_args) == {"keep_ties": True}
    script_args, _, _ = make_parser().parse_args_and_config(
        ["--config", TINY, "--dataset_recipe_options", "keep_ties: true"]
    )
    assert recipe_options(script_args) == {"keep_ties": True}


def test_a_test_split_that_reads_the_training_rows_is_refused(tmp_path, tiny_sft_path):
    data = tmp_path / "pairs.jsonl"
    user = {"role": "user", "content": "Hi"}
    row = {
        "prompt": "Hi",
        "chosen": [user, {"role": "assistant", "content": "Hello"}],
        "rejected": [user, {"role": "assistant", "content": "Go"}],
    }
    data.write_text(json.dumps(row) + "\n")
    for splits in (["--dataset_test_split", "test"], ["--dataset_train_split", "x", "--dataset_test_split", "x"]):
        _fails_fast(
            ["--dataset_name", str(data), *splits, "--output_dir", str(tmp_path / "run")],
            r"the test split would read the training rows .* --allow_eval_on_train true",
        )
    _fails_fast(
        [
            "--dataset_train_split",
            "train_prefs",
            "--dataset_test_split",
            "train_prefs",
            "--output_dir",
            str(tmp_path / "run"),
        ],
        r"would read the training rows of 'dpo-recipes/toy-world'",
    )


def test_incomplete_checkpoints_and_finished_runs_are_not_resumed(tmp_path):
    from dpo_recipes.core.errors import ConfigError
    from dpo_recipes.training.run_directory import checkpoint_to_resume

    for step, state in ((5, '{"global_step": 5}'), (10, ""), (15, '{"global_step": 1')):  # 0-byte, cut off
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-old").mkdir()  # a user's copy, not one of transformers' numbered checkpoints
    assert checkpoint_to_resume("last", str(tmp_path)) == str(tmp_path / "checkpoint-5")
    with pytest.raises(ConfigError, match="no readable trainer_state.json"):
        checkpoint_to_resume(str(tmp_path / "checkpoint-10"), str(tmp_path))
    (tmp_path / "trainer_state.json").write_text('{"global_step": 30}')
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ConfigError, match="already finished at step 30 .* nothing to resume"):
        checkpoint_to_resume("last", str(tmp_path))


def test_a_second_run_into_a_busy_output_dir_fails_at_once(tmp_path):
    from dpo_recipes.core.errors import ConfigError
    from dpo_recipes.training.run_directory import output_dir_lock

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from dpo_recipes.training.run_directory import output_dir_lock\n"
                f"with output_dir_lock({str(tmp_path)!r}):\n    print('locked', flush=True); time.sleep(60)"
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        busy = pytest.raises(ConfigError, match=rf"in use by another run \(process {holder.pid}\)")
        with busy, output_dir_lock(str(tmp_path)):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_dir_lock(str(tmp_path)):  # freed when its holder died, even by SIGKILL
        pass


@pytest.mark.slow
def test_sigterm_to_accelerate_launch_stops_the_training_process(tmp_path, tiny_sft_path):
    import psutil

    command = [
        str(Path(sys.executable).parent / "accelerate"),
        "launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "recipes" / "zephyr_style.py"),
        "--config",
        TINY,
        *QUIET,
        "--max_steps",
        "100000",
        "--save_strategy",
        "no",
        "--torch_threads",
        "1",
        "--output_dir",
        str(tmp_path),
    ]
    launcher = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in launcher.stdout:  # wait until training has started
            if "Held-out evaluation before training" in line:
                break
        children = psutil.Process(launcher.pid).children(recursive=True)
        assert children, "accelerate launch started no training process"
        launcher.send_signal(signal.SIGTERM)  # the parent only, as a scheduler or `kill PID` would
        launcher.wait(timeout=30)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"training processes outlived their launcher: {[p.pid for p in alive]}"
    finally:
        for process in psutil.Process().children(recursive=True):
            process.kill()
    assert not (tmp_path / "adapter_model.safetensors").exists()  # stopped mid-run: nothing final published


def test_a_chat_template_that_refuses_an_empty_turn_does_not_break_preflight(tiny_tokenizer):
    from dpo_recipes.training.preflight import _shortest_pair

    strict = copy.deepcopy(tiny_tokenizer)
    strict.chat_template = "{% if messages[0]['content'] == '' %}{{ raise_exception('empty turn') }}{% endif %}x"
    assert _shortest_pair(strict, conversational=True) == 2
    assert _shortest_pair(tiny_tokenizer, conversational=True) > 2


def test_options_removed_from_trl_name_their_replacement(tmp_path):
    config = tmp_path / "old.yaml"
    config.write_text(Path(TINY).read_text() + "rpo_alpha: 0.5\nmax_prompt_length: 128\n")
    with pytest.raises(
        SystemExit,
        match=r"removed in TRL 1\.16: max_prompt_length → use max_length .*; rpo_alpha → "
        r"use loss_type: \[sigmoid, sft\] with loss_weights",
    ):
        run_from_command_line(["--config", str(config), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match="generate_during_eval → use `dpo-recipes evaluate RUN_DIR`"):
        run_from_command_line(["--config", TINY, "--generate_during_eval=true"])
    assert not (tmp_path / "out").exists()  # refused before anything ran


def test_options_the_installed_trl_ignores_are_warned_about():
    from dpo_recipes.training.retired_options import ignored_warnings

    _, training_args, _ = make_parser().parse_args_and_config(["--config", TINY, "--padding_free", "true"])
    (warning,) = ignored_warnings(training_args)
    assert warning.startswith("padding_free=true does nothing here: TRL 1.16 disables padding_free")
    _, plain, _ = make_parser().parse_args_and_config(["--config", TINY])
    assert ignored_warnings(plain) == []


def test_a_broken_config_is_named_in_one_line_before_the_parser_reads_it(tmp_path):
    from dpo_recipes.core.errors import ConfigError
    from dpo_recipes.training.retired_options import check_removed

    broken = tmp_path / "broken.yaml"
    broken.write_text("beta: [0.1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not plain YAML: .*\(line 2, column 1\)"):
        check_removed(["--config", str(broken)])
