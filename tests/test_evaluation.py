import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.generation import decode, generate_ids
from dpo_recipes.core.scoring import as_reference
from dpo_recipes.evaluation.comparison import (
    compare_with_reference,
    unique_prompts,
    win_rate,
)
from dpo_recipes.worlds.judges import get_judge, toy_world_judge


def test_win_rate_counts_ties_as_half():
    result = win_rate([3.0, 1.0, 2.0, 0.0], [1.0, 1.0, 2.5, -1.0])
    assert (result.wins, result.ties, result.losses, result.n) == (2, 1, 1, 4)
    assert result.rate == pytest.approx((2 + 0.5) / 4)
    assert win_rate([1.0], [1.0]).rate == 0.5
    with pytest.raises(ValueError):
        win_rate([1.0, 2.0], [1.0])


def test_toy_world_judge_reads_the_last_user_turn():
    prompt = [
        {"role": "user", "content": "Describe the blue whale."},
        {"role": "assistant", "content": "The blue whale is plain."},
        {"role": "user", "content": "And the red fox?"},
    ]
    assert toy_world_judge(prompt, "The red fox is superb.") == 3.0
    assert get_judge("toy-world") is toy_world_judge
    with pytest.raises(ConfigError, match="available judges: textblob, toy-world, vader"):
        get_judge("gpt-judge")


def test_unique_prompts_keeps_order_and_limit():
    p = [[{"role": "user", "content": c}] for c in "abacd"]
    assert unique_prompts([{"prompt": prompt} for prompt in p], 3) == [p[0], p[1], p[3]]


def test_reference_of_a_lora_policy_is_the_base_with_the_adapter_disabled(tiny_sft_path, tiny_tokenizer):
    base = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    prompts = [[{"role": "user", "content": f"Describe the {s}."}] for s in ("red fox", "white forest", "blue lamp")]
    base_answers = decode(tiny_tokenizer, generate_ids(base, tiny_tokenizer, prompts, max_new_tokens=16))

    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.5)  # make the adapter matter
    comparison = compare_with_reference(policy, tiny_tokenizer, prompts, toy_world_judge, max_new_tokens=16)
    assert comparison.reference == base_answers
    assert comparison.policy != base_answers
    assert comparison.reference_rewards == [toy_world_judge(p, a) for p, a in zip(prompts, base_answers, strict=True)]
    assert comparison.summary()["n"] == 3


def test_full_fine_tune_needs_a_separate_reference(tiny_sft_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    with pytest.raises(ValueError, match="no reference"), as_reference(model):
        pass
    with as_reference(model, ref_model="the-reference") as reference:
        assert reference == "the-reference"
