"""Every YAML preset parses with the recipe's real parser, and drift (unknown keys) is an error."""

import pytest
import torch

from .conftest import REPO, load_recipe_module

PRESETS_DIR = "recipes/zephyr_style"
PRESETS = sorted((REPO / PRESETS_DIR).glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((REPO / "recipes" / "accelerate_configs").glob("*.yaml"))
# transformers refuses bf16/fp16 at parse time on a machine without a GPU; every other key is still checked
CPU_ONLY = [] if torch.cuda.is_available() else ["--bf16", "false", "--fp16", "false"]


@pytest.fixture(scope="module")
def recipe():
    return load_recipe_module("zephyr_style")


def test_there_are_presets():
    assert {p.name for p in PRESETS} >= {"tiny.yaml", "full.yaml", "qlora.yaml"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: str(p.relative_to(REPO)))
def test_preset_parses_with_the_real_parser(recipe, preset):
    script_args, training_args, model_args = recipe.make_parser().parse_args_and_config(
        ["--config", str(preset), *CPU_ONLY]
    )
    assert model_args.model_name_or_path and script_args.dataset_name and script_args.dataset_recipe
    assert training_args.output_dir


def test_zephyr_presets_carry_the_published_hyperparameters(recipe):
    _, full, full_model = recipe.make_parser().parse_args_and_config(
        ["--config", str(REPO / PRESETS_DIR / "full.yaml"), *CPU_ONLY]
    )
    assert (full.beta, full.learning_rate, full.lr_scheduler_type.value) == (0.01, 5.0e-7, "cosine")
    assert full_model.model_name_or_path == "alignment-handbook/zephyr-7b-sft-full" and not full_model.use_peft
    _, qlora, qlora_model = recipe.make_parser().parse_args_and_config(
        ["--config", str(REPO / PRESETS_DIR / "qlora.yaml"), *CPU_ONLY]
    )
    assert qlora_model.load_in_4bit and qlora_model.use_peft and qlora_model.lora_r == 128
    assert (qlora.beta, qlora.learning_rate) == (0.01, 5.0e-6)


def test_unknown_yaml_key_is_an_error(recipe, tmp_path):
    config = tmp_path / "drifted.yaml"
    config.write_text((REPO / PRESETS_DIR / "tiny.yaml").read_text() + "max_prompt_length: 512\n")
    with pytest.raises(ValueError, match="max_prompt_length"):
        recipe.make_parser().parse_args_and_config(["--config", str(config)])


def test_command_line_flags_override_the_yaml(recipe):
    args = ["--config", str(REPO / PRESETS_DIR / "tiny.yaml"), "--beta", "0.5", "--judge", "toy-world"]
    script_args, training_args, _ = recipe.make_parser().parse_args_and_config(args)
    assert training_args.beta == 0.5 and script_args.judge == "toy-world"


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_is_valid_for_accelerate(config):
    from accelerate.commands.config.config_args import ClusterConfig

    cluster = ClusterConfig.from_yaml_file(config)  # unknown keys are an error here
    expected = {
        "single_gpu.yaml": ("NO", 1),
        "multi_gpu.yaml": ("MULTI_GPU", 8),
        "deepspeed_zero2.yaml": ("DEEPSPEED", 8),
        "deepspeed_zero3.yaml": ("DEEPSPEED", 8),
        "fsdp.yaml": ("FSDP", 8),
        "multi_node.yaml": ("MULTI_GPU", 16),
    }[config.name]
    assert (cluster.distributed_type.value, cluster.num_processes) == expected
    if config.name == "multi_node.yaml":
        assert (cluster.num_machines, cluster.machine_rank, cluster.main_process_port) == (2, 0, 29500)
    if cluster.deepspeed_config:
        assert cluster.deepspeed_config["zero_stage"] == (3 if "zero3" in config.name else 2)
    assert "recipes/zephyr_style.py" in config.read_text()  # each documents its launch line
