"""The Zephyr-style recipe end to end on a reduced tiny preset: real TRL training, real outputs."""

import json
import math
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from .conftest import REPO, TINY, load_recipe_module, run_flags

QUICK = run_flags(
    max_steps=6,
    max_train_samples=96,
    max_eval_samples=32,
    logging_steps=1,
    eval_strategy=None,
    save_strategy=None,
    eval_steps=3,
    save_steps=3,
    win_rate_prompts=8,
    max_new_tokens=16,
)


@pytest.mark.slow
def test_tiny_preset_trains_an_adapter_and_reports(tmp_path, tiny_sft_path):
    recipe = load_recipe_module("zephyr_style")
    args = recipe.make_parser().parse_args_and_config(["--config", TINY, "--output_dir", str(tmp_path), *QUICK])
    metrics = recipe.main(*args)

    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_state.json",
        "metrics.json",
        "training_curves.png",
        "report.md",
        "checkpoint-6/adapter_model.safetensors",
    ):
        assert (tmp_path / name).is_file(), name
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b)  # PEFT initialises B to zero

    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics, default=str))
    assert metrics["train"]["global_step"] == 6
    for key in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins"):
        assert math.isfinite(metrics["eval_after"][key])
    assert metrics["eval_before"]["eval_rewards/margins"] == 0.0  # policy = reference before training
    assert metrics["win_rate"]["n"] == 8 and 0.0 <= metrics["win_rate"]["win_rate"] <= 1.0
    logged = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert sum("rewards/margins" in log for log in logged) == 6
    report = (tmp_path / "report.md").read_text()
    assert f"**{metrics['win_rate']['win_rate']:.3f}**" in report and "| reference (SFT) |" in report


def test_help_explains_the_recipe_options():
    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "zephyr_style.py"), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for option in ("--dataset_recipe", "--judge", "--win_rate_prompts", "--beta", "--use_peft", "--load_in_4bit"):
        assert option in result.stdout
    assert "Registered dataset recipe" in result.stdout


@pytest.mark.slow
def test_recipe_trains_on_another_dataset_recipe_in_standard_format(tmp_path, tiny_sft_path):
    recipe = load_recipe_module("zephyr_style")
    hh = str(REPO / "tests" / "fixtures" / "hh_rlhf.jsonl")
    args = recipe.make_parser().parse_args_and_config(
        [
            "--config",
            TINY,
            "--output_dir",
            str(tmp_path),
            "--dataset_name",
            hh,
            "--dataset_recipe",
            "hh_rlhf",
            "--dataset_train_split",
            "train",
            "--dataset_test_split",
            "train",
            "--allow_eval_on_train",
            "true",
            "--dataset_format",
            "standard",
            "--on_bad_row",
            "skip",
            "--judge",
            "",
            "--max_steps",
            "2",
            "--per_device_train_batch_size",
            "2",
            "--eval_strategy",
            "no",
            "--save_strategy",
            "no",
            "--logging_steps",
            "1",
        ]
    )
    metrics = recipe.main(*args)
    assert metrics["data"]["train"] == (
        "train: read 10 rows, kept 8, dropped 2 (1 the transcripts differ before their final turn (a reply holds "
        "'\\n\\nHuman:'), 1 bad chosen: transcript does not start with '\\n\\nHuman:')"
    )
    assert metrics["data"]["test"].endswith("; NOT held out: the same rows as the train split (allow_eval_on_train)")
    assert metrics["train"]["global_step"] == 2 and math.isfinite(metrics["eval_after"]["eval_loss"])
    assert metrics["win_rate"] == {"skipped": "no judge configured (set --judge)"}
    assert "Not measured: no judge configured" in (tmp_path / "report.md").read_text()
