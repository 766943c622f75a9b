"""Evaluation of a run: KL estimator with known answers, win-rate intervals, judges, `evaluate` on a tiny run."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, MistralForSequenceClassification

from dpo_recipes.cli import main as cli
from dpo_recipes.core.errors import ConfigError
from dpo_recipes.evaluation.comparison import WinRate, kl_to_reference
from dpo_recipes.evaluation.run_eval import SECTION_START, evaluate_run
from dpo_recipes.worlds.judges import get_judge

from .conftest import REPO, load_recipe_module, run_flags


class FixedDistribution(torch.nn.Module):
    """A 'language model' whose next-token distribution is the same softmax(weights) at every position."""

    def __init__(self, weights: torch.Tensor):
        super().__init__()
        self.weights = torch.nn.Parameter(weights, requires_grad=False)

    @property
    def device(self):
        return self.weights.device

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=self.weights.expand(*input_ids.shape, -1))


def test_kl_estimate_matches_a_hand_built_pair_of_distributions(tiny_tokenizer):
    generator = torch.Generator().manual_seed(0)
    vocab = len(tiny_tokenizer)
    p_weights, q_weights = torch.randn(vocab, generator=generator), torch.randn(vocab, generator=generator)
    p, q = p_weights.softmax(-1), q_weights.softmax(-1)
    kl_per_token = float((p * (p.log() - q.log())).sum())
    tokens_per_sample, n = 3, 400
    samples = torch.multinomial(p, n * tokens_per_sample, replacement=True, generator=generator).view(n, -1).tolist()
    prompts = [[{"role": "user", "content": "Describe the red fox."}]] * n
    estimate = kl_to_reference(
        FixedDistribution(p_weights), tiny_tokenizer, prompts, samples, ref_model=FixedDistribution(q_weights)
    )
    expected = tokens_per_sample * kl_per_token  # sequence KL of i.i.d. tokens: the per-token KL times the length
    assert abs(estimate.mean - expected) < 4 * estimate.stderr
    assert 0 < estimate.stderr < 0.2 * expected


def test_kl_of_identical_models_is_zero(tiny_sft_path, tiny_tokenizer):
    base = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"]))  # B = 0: policy == reference
    prompts = [[{"role": "user", "content": f"Describe the {s}."}] for s in ("red fox", "blue lamp")]
    samples = [tiny_tokenizer("The red fox is good.</s>")["input_ids"], tiny_tokenizer("Nice.</s>")["input_ids"]]
    estimate = kl_to_reference(policy, tiny_tokenizer, prompts, samples)
    assert estimate.mean == 0.0 and estimate.stderr == 0.0


@pytest.mark.parametrize(
    ("wins", "ties", "losses", "low", "high"),
    [(70, 0, 30, 0.6041, 0.7810), (60, 20, 20, 0.6041, 0.7810), (0, 0, 10, 0.0, 0.2775), (10, 0, 0, 0.7225, 1.0)],
)
def test_win_rate_wilson_interval_on_known_counts(wins, ties, losses, low, high):
    interval = WinRate(wins, ties, losses).interval()
    assert interval == pytest.approx((low, high), abs=5e-4)


def test_reward_model_judge_and_unavailable_judges(tmp_path, tiny_sft_path, tiny_tokenizer):
    config = AutoModelForCausalLM.from_pretrained(tiny_sft_path).config
    config.num_labels = 1
    torch.manual_seed(0)
    MistralForSequenceClassification(config).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    judge = get_judge(f"reward-model:{tmp_path}")
    prompt = [{"role": "user", "content": "Describe the red fox."}]
    score = judge(prompt, "The red fox is superb.")
    assert isinstance(score, float) and math.isfinite(score)
    assert judge(prompt, "The red fox is superb.") == score and judge(prompt, "Awful.") != score
    with pytest.raises(ConfigError, match="TRL 1.16 ships no pairwise judges"):
        get_judge("pairwise:pairrm")
    with pytest.raises(ConfigError, match="available judges: textblob, toy-world, vader"):
        get_judge("gpt-4")


@pytest.mark.slow
def test_evaluate_a_tiny_run(tmp_path, tiny_sft_path, capsys):
    recipe = load_recipe_module("zephyr_style")
    tiny = str(REPO / "recipes" / "zephyr_style" / "tiny.yaml")
    quick = run_flags(max_steps=8, max_train_samples=128, max_eval_samples=32, win_rate_prompts=8, max_new_tokens=16)
    metrics = recipe.main(
        *recipe.make_parser().parse_args_and_config(["--config", tiny, "--output_dir", str(tmp_path), *quick])
    )

    cli(
        [
            "evaluate",
            str(tmp_path),
            "--temperatures",
            "0,1",
            "--n-prompts",
            "8",
            "--max-new-tokens",
            "16",
            "--max-pairs",
            "32",
        ]
    )
    assert "KL(policy || reference)" in capsys.readouterr().out
    results = json.loads((tmp_path / "evaluation.json").read_text())
    for point in results["temperatures"]:
        assert point["n"] == 8 and point["ci95"][0] <= point["win_rate"] <= point["ci95"][1]
    assert math.isfinite(results["kl"]["mean"]) and results["kl"]["stderr"] > 0
    implicit, trl = results["implicit_reward"], metrics["eval_after"]  # from scratch; 32 rows = one TRL eval batch
    # TRL's share is a float32 mean of 0/1 values: exact count, one rounding of the division (2⁻²⁴ of a share ≤ 1)
    assert implicit["accuracy"] == pytest.approx(trl["eval_rewards/accuracies"], abs=2**-24)
    # the margin is β·(a difference of four log-prob sums): float32 rounding of sums of that size, with 100× room
    scale = 0.3 * 2 * (abs(trl["eval_logps/chosen"]) + abs(trl["eval_logps/rejected"]))  # tiny.yaml's β = 0.3
    assert implicit["margin"] == pytest.approx(trl["eval_rewards/margins"], abs=1e-5 * scale)
    assert (tmp_path / "win_rate_vs_temperature.png").read_bytes()[:4] == b"\x89PNG"

    evaluate_run(tmp_path, temperatures=(0.0,), n_prompts=4, max_new_tokens=8)  # again: the section is replaced
    report = (tmp_path / "report.md").read_text()
    assert report.count(SECTION_START) == 1 and "| 0 |" in report and "## Held-out implicit reward" in report


@pytest.mark.slow
def test_a_qlora_run_is_evaluated_on_its_4bit_base_truncated_as_it_trained(tmp_path, tiny_sft_path):
    """An adapter trained against 4-bit weights is evaluated against the same 4-bit weights (applied to the full
    precision base it would be another policy), and its held-out pairs are cut to the run's max_length."""
    from bitsandbytes.nn import Params4bit

    from dpo_recipes.evaluation.run_eval import load_run, truncated

    flags = run_flags(max_steps=1, judge="", crosscheck="false", win_rate_prompts=None, max_new_tokens=None)
    quantized = ["--load_in_4bit", "true", "--bnb_4bit_quant_type", "nf4", "--max_length", "40"]
    cli(
        [
            "train",
            "--config",
            str(REPO / "recipes/zephyr_style/tiny.yaml"),
            "--output_dir",
            str(tmp_path),
            *flags,
            *quantized,
        ]
    )
    policy, reference, _, info = load_run(tmp_path)
    assert reference is None and info.max_length == 40 and info.quantization["bnb_4bit_quant_type"] == "nf4"
    assert any(isinstance(p, Params4bit) for p in policy.parameters())
    assert {p.device.type for p in policy.parameters()} == {"cuda" if torch.cuda.is_available() else "cpu"}
    assert truncated([1, 2, 3], list(range(1, 60)), 40, "keep_start") == ([1, 2, 3], list(range(1, 41)))
    assert truncated([1, 2, 3], list(range(1, 60)), 40, "keep_end") == ([], list(range(20, 60)))
