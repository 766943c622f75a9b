"""`dpo-recipes train` and `merge`: one console script, the model card, TensorBoard, standalone merged models."""

import argparse
import json
import re

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from trl import DPOConfig, ModelConfig

from dpo_recipes import cli
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.training.arguments import RecipeArguments
from dpo_recipes.training.model_card import changed_hyperparameters
from dpo_recipes.worlds import embedded

from .conftest import TINY, run_flags

QUICK = run_flags(logging_steps=1)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_sft_path):
    run = tmp_path_factory.mktemp("lora-run")
    cli.main(["train", "--config", TINY, "--output_dir", str(run), "--report_to", "tensorboard", *QUICK])
    return run


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_sft_path):
    run = tmp_path_factory.mktemp("qlora-run")
    cli.main(
        [
            "train",
            "--config",
            TINY,
            "--output_dir",
            str(run),
            "--load_in_4bit",
            "true",
            "--lora_r",
            "8",
            "--judge",
            "",
            "--crosscheck",
            "false",
            *QUICK,
        ]
    )
    return run


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.slow
def test_train_writes_a_model_card_with_the_crosscheck_verdict(lora_run):
    assert json.loads((lora_run / "metrics.json").read_text())["train"]["weights_changed"] is True
    card = (lora_run / "README.md").read_text()
    front = _front_matter(card)  # the tiny model is not on the Hub: no base_model, no dataset to name
    assert {key: front[key] for key in front if key != "tags"} == {
        "base_model_relation": "adapter",
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "license": "apache-2.0",
    }
    assert front["tags"][:4] == ["dpo", "trl", "dpo-recipes", "lora"]  # then what PEFT's card adds
    assert "| beta | `0.3` |" in card and "| max_steps | `4` |" in card  # changed hyperparameters
    assert "| per_device_train_batch_size | `16` |" in card and "| seed |" not in card  # 42 is the default
    assert "**PASS** `sigmoid beta=0.3` [lora, float32" in card
    verdict = json.loads((lora_run / "crosscheck.json").read_text())
    assert [result["passed"] for result in verdict["results"]] == [True]
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert f"**{metrics['win_rate']['win_rate']:.3f}**" in card
    assert "## Intended use and limitations" in card and "not a useful language model" in card


@pytest.mark.slow
def test_tensorboard_events_go_to_a_named_run_folder(lora_run):
    folders = list((lora_run / "runs").iterdir())
    assert [folder.name for folder in folders] == ["tiny-zephyr-sft-toy-world-sigmoid-beta0.3-lora"]
    assert list(folders[0].glob("events.out.tfevents.*"))


def test_model_card_lists_only_changed_values_and_no_secrets():
    changed = changed_hyperparameters(
        RecipeArguments(),
        ModelConfig(use_peft=True),
        DPOConfig(output_dir="out", beta=0.2, bf16=False, use_cpu=True, hub_token="hf_SECRETSECRET"),
    )
    assert changed["beta"] == 0.2 and changed["use_peft"] is True and changed["bf16"] is False
    assert "learning_rate" not in changed and "dataset_recipe" not in changed
    assert "hf_SECRETSECRET" not in json.dumps(changed, default=str)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.slow
def test_merge_gives_a_standalone_model_equal_to_base_plus_adapter(lora_run, tmp_path, capsys):
    cli.main(["merge", str(lora_run), str(tmp_path / "merged")])
    assert "merged into the base weights in float32" in capsys.readouterr().out
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    base = AutoModelForCausalLM.from_pretrained(embedded.resolve(embedded.TINY_SFT))
    policy = PeftModel.from_pretrained(base, lora_run).eval()
    ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(merged, ids), _logits(policy, ids), rtol=1e-4, atol=1e-4)
    original = AutoModelForCausalLM.from_pretrained(embedded.resolve(embedded.TINY_SFT))
    assert not torch.allclose(_logits(merged, ids), _logits(original, ids), atol=1e-4)  # the adapter is in

    with pytest.raises(SystemExit, match="already exists"):
        cli.main(["merge", str(lora_run), str(tmp_path / "merged")])


@pytest.mark.slow
def test_merge_of_a_qlora_run_uses_the_dequantized_4bit_base(qlora_run, tmp_path, capsys):
    cli.main(["merge", str(qlora_run), str(tmp_path / "merged")])
    assert "de-quantized copy" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    metrics = json.loads((qlora_run / "metrics.json").read_text())
    assert metrics["train"]["weights_changed"] is True  # evaluated before training, on CPU: it still learns
    run = metrics["run"]
    quantization = BitsAndBytesConfig.from_dict(run["quantization"])
    path = embedded.resolve(embedded.TINY_SFT)
    ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))

    dequantized = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization).dequantize()
    unmerged = PeftModel.from_pretrained(dequantized, qlora_run).eval()
    torch.testing.assert_close(_logits(merged, ids), _logits(unmerged, ids), rtol=1e-4, atol=1e-4)  # exact merge

    # Against the trained policy itself (4-bit base + adapter) the merged model is off only by the bitsandbytes
    # CPU kernel's reduced-precision matmul (measured 0.07 in logits); merging into the original full-precision
    # weights would be off by the quantization error too (measured 0.94).
    trained = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization), qlora_run
    ).eval()
    into_original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path), qlora_run).merge_and_unload()
    merged_error = (_logits(merged, ids) - _logits(trained, ids)).abs().max()
    original_error = (_logits(into_original, ids) - _logits(trained, ids)).abs().max()
    assert merged_error < original_error / 5


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)
        elif not isinstance(action, argparse._HelpAction):
            yield parser.prog, action


def test_every_cli_option_has_help(capsys):
    undocumented = [f"{prog} {action.dest}" for prog, action in _actions(cli.make_parser()) if not action.help]
    assert undocumented == []
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("train", "data", "crosscheck", "evaluate", "merge"))


def test_train_help_is_the_recipe_parser(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dpo-recipes train")
    for option in ("--dataset_recipe", "--beta", "--load_in_4bit", "--crosscheck", "--report_to", "--config"):
        assert option in out


def test_model_card_shows_hostile_names_as_text_and_its_snippet_loads_the_run():
    import ast

    from dpo_recipes.training.model_card import render

    evil = 'data/"); import os; os.system("x") #<img src=x onerror=alert(1)>`**bold**`|col'
    out_dir = 'runs/it\'s "here"\nnext'
    metrics = {
        "run": RunRecord(model="m", dataset=evil, dataset_recipe="plain", test_split="test", peft=True).to_json(),
        "data": {"train": f"{evil}[train]: read 2 rows", "test": f"{evil}[test]: read 1 rows"},
        "eval_before": {},
        "eval_after": {},
        "train": {"global_step": 1},
        "wall_time_s": {"train": 1.0},
        "win_rate": {"skipped": "no judge"},
    }
    card = render(
        metrics,
        RecipeArguments(dataset_name=evil),
        DPOConfig(output_dir=out_dir, bf16=False, use_cpu=True),
        ModelConfig(model_name_or_path="m", use_peft=True),
        None,
    )
    body = card.split("---\n", 2)[2]
    outside_code = re.sub(r"(`+).*?\1", "", re.sub(r"```.*?\n```", "", body, flags=re.S))  # code shows as text
    assert "<img" not in outside_code and "&lt;img src=x onerror=alert\\(1\\)&gt;" in outside_code
    assert "\n**bold**" not in body and "``data/" in body  # inside a code span fenced by two backticks
    assert _front_matter(card)["datasets"] == [evil]
    snippet = body.split("```python\n")[1].split("```")[0]
    call = [node for node in ast.walk(ast.parse(snippet)) if isinstance(node, ast.Call)][-1]
    assert ast.literal_eval(call.args[0]) == out_dir  # the path as a literal: nothing in it runs
