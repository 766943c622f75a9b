"""The one generation path: per-answer random streams (batch-invariant samples), k samples per prompt in one
batch, the sampler's distribution, the memory-bounded batch size and the answer cache."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from dpo_recipes.core import generation
from dpo_recipes.core.generation import (
    GenerationCache,
    RowSeededSampler,
    generate_ids,
    generation_dtype,
    low_precision_copy,
    rows_per_batch,
    weights_key,
)

PROMPTS = [[{"role": "user", "content": f"Describe the {thing}."}] for thing in ("red fox", "white forest", "lamp")]


@pytest.fixture(scope="module")
def tiny(tiny_sft_path):
    return AutoModelForCausalLM.from_pretrained(tiny_sft_path)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_sample_depends_on_its_prompt_and_draw_not_on_its_batch(tiny, tiny_tokenizer, monkeypatch, dtype):
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", dtype)
    together = generate_ids(tiny, tiny_tokenizer, PROMPTS, 12, temperature=1.0, seed=3, samples_per_prompt=2)
    assert len(together) == 6
    assert generate_ids(tiny, tiny_tokenizer, PROMPTS, 12, temperature=1.0, seed=3, samples_per_prompt=2) == together
    # bfloat16's matmuls may round differently at another batch size, as AVX2's emulation of them does: a rare
    # token can differ there, so only float32's answers must not depend on the batch
    if dtype == "float32":
        monkeypatch.setattr(generation, "CPU_GENERATION_BYTES", 1)  # one row per batch
        alone = [
            generate_ids(tiny, tiny_tokenizer, [prompt], 12, temperature=1.0, seed=3, samples_per_prompt=2)
            for prompt in reversed(PROMPTS)
        ]
        assert together == [ids for pair in reversed(alone) for ids in pair]
    assert together[0] != together[1]  # the draws of one prompt differ
    other_seed = generate_ids(tiny, tiny_tokenizer, PROMPTS, 12, temperature=1.0, seed=4, samples_per_prompt=2)
    assert other_seed != together


def test_greedy_is_one_answer_per_prompt(tiny, tiny_tokenizer):
    with pytest.raises(ValueError, match="temperature"):
        generate_ids(tiny, tiny_tokenizer, PROMPTS, 8, temperature=0.0, samples_per_prompt=2)
    assert generate_ids(tiny, tiny_tokenizer, PROMPTS, 8) == generate_ids(tiny, tiny_tokenizer, PROMPTS[::-1], 8)[::-1]


def test_the_sampler_draws_from_softmax_of_the_scores_over_the_temperature():
    logits, temperature, rows = torch.tensor([2.0, 1.0, 0.0, -1.0, -30.0]), 0.7, 20_000
    sampler = RowSeededSampler(temperature, list(range(rows)))
    chosen = sampler(None, logits.repeat(rows, 1)).argmax(dim=-1)
    expected = torch.softmax(logits / temperature, dim=-1)
    counts = torch.bincount(chosen, minlength=5).double()
    # each count is binomial(rows, p): within 5 standard deviations (a false alarm about once in 3.5 million)
    bound = 5 * torch.sqrt(rows * expected * (1 - expected)) + 1
    assert torch.all((counts - rows * expected).abs() <= bound), (counts, rows * expected)
    assert counts[-1] == 0  # e^-43 relative: never drawn


def test_batches_fit_the_memory_budget(tiny, monkeypatch):
    config = tiny.config
    per_row = (
        2
        * config.num_hidden_layers
        * config.num_key_value_heads
        * (config.hidden_size // config.num_attention_heads)
        * 4
        * (30 + 20)
        + 16 * config.vocab_size
    )
    monkeypatch.setattr(generation, "CPU_GENERATION_BYTES", 10 * per_row + 5)
    assert rows_per_batch(tiny, 30, 20) == 10
    monkeypatch.setattr(generation, "CPU_GENERATION_BYTES", 1)
    assert rows_per_batch(tiny, 30, 20) == 1


def test_the_answer_cache_generates_each_answer_once(tiny, tiny_tokenizer, tmp_path, monkeypatch):
    calls = []
    real = generation.generate_ids
    monkeypatch.setattr(
        generation,
        "generate_ids",
        lambda m, t, prompts, *a, **k: calls.append(len(prompts)) or real(m, t, prompts, *a, **k),
    )
    cache = GenerationCache(tmp_path)
    first = cache.generate_ids(tiny, tiny_tokenizer, PROMPTS[:2], 10, 1.0, seed=0)
    both = cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0)
    assert calls == [2, 1]  # the third prompt is the only new one
    assert both[:2] == first and both == real(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0)
    two = cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0, samples_per_prompt=2)
    assert calls == [2, 1, 3] and two[::2] == both  # draw 0 of each prompt is the answer already stored
    cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0)
    cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=1)  # another seed: other answers
    cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 0.5, seed=0)  # another temperature
    assert calls == [2, 1, 3, 3, 3] and len(list(tmp_path.glob("*.json"))) == 3


def test_the_weights_key_moves_with_any_weight_and_ignores_a_disabled_adapter(tiny_sft_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    policy = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    adapter_key = weights_key(policy, adapter_disabled=True)
    with torch.no_grad():
        next(p for n, p in policy.named_parameters() if "lora_B" in n).add_(1.0)
    assert weights_key(policy, adapter_disabled=True) == adapter_key  # the base did not change
    assert weights_key(policy) != weights_key(policy, adapter_disabled=True)
    assert adapter_key == weights_key(AutoModelForCausalLM.from_pretrained(tiny_sft_path))  # the base's own key
    with torch.no_grad():
        next(p for n, p in policy.named_parameters() if "lora_" not in n).view(-1)[7] += 1e-3
    assert weights_key(policy, adapter_disabled=True) != adapter_key


def test_the_weights_key_does_not_depend_on_the_chunk_size(tiny_sft_path, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    whole = weights_key(model)
    monkeypatch.setattr(generation, "WEIGHTS_CHUNK", 1000)  # every large tensor in many chunks
    assert weights_key(model) == whole


def test_a_damaged_cache_file_is_regenerated_not_trusted(tiny, tiny_tokenizer, tmp_path):
    cache = GenerationCache(tmp_path)
    first = cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0)
    (path,) = tmp_path.glob("*.json")
    path.write_text(path.read_text()[:40])  # cut short, as a full disk or a hand edit would leave it
    assert cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0) == first
    path.write_text('["not", "a", "cache"]')
    assert cache.generate_ids(tiny, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0) == first


def test_a_float32_model_generates_in_bfloat16_only_where_the_cpu_multiplies_it_natively(tiny, monkeypatch):
    monkeypatch.setattr(generation, "cpu_has_native_bfloat16", lambda: True)
    assert generation_dtype(tiny) == torch.bfloat16
    monkeypatch.setattr(generation, "cpu_has_native_bfloat16", lambda: False)
    assert generation_dtype(tiny) == torch.float32
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", "bfloat16")
    assert generation_dtype(tiny) == torch.bfloat16
    assert generation_dtype(tiny.to(torch.float16)) == torch.float16  # a half-precision model keeps its own
    tiny.to(torch.float32).model.norm.to(torch.float16)
    assert generation_dtype(tiny) == torch.float32  # mixed precisions: no copy, the model as it is
    tiny.to(torch.float32)
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", "fp8")
    with pytest.raises(ValueError, match="DPO_RECIPES_GENERATION_DTYPE"):
        generation_dtype(tiny)


def test_the_bfloat16_copy_keeps_a_disabled_adapter_disabled_and_leaves_the_model_alone(
    tiny_sft_path, tiny_tokenizer, tmp_path, monkeypatch
):
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", "bfloat16")
    base = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_sft_path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_alpha=64),
    )
    with policy.disable_adapter():
        disabled = generate_ids(policy, tiny_tokenizer, PROMPTS, 10, temperature=1.0, seed=0)
    assert disabled == generate_ids(base, tiny_tokenizer, PROMPTS, 10, temperature=1.0, seed=0)
    assert generate_ids(policy, tiny_tokenizer, PROMPTS, 10, temperature=1.0, seed=0) != disabled
    assert {p.dtype for p in policy.parameters()} == {torch.float32}  # generation copied, never cast, the model
    cache = GenerationCache(tmp_path)
    cache.generate_ids(base, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0)
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", "float32")
    cache.generate_ids(base, tiny_tokenizer, PROMPTS, 10, 1.0, seed=0)
    assert len(list(tmp_path.glob("*.json"))) == 2  # answers of another precision are not the same answers


def test_the_bfloat16_copy_of_a_lora_policy_computes_the_policy_not_its_base(tiny_sft_path, tiny_tokenizer):
    base = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_sft_path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False, lora_alpha=64),
    )
    batch = tiny_tokenizer(["Describe the red fox and the white forest."], return_tensors="pt")
    with torch.no_grad():
        full, plain = policy(**batch).logits, base(**batch).logits
        half = low_precision_copy(policy, torch.bfloat16)(**batch).logits.float()
        with policy.disable_adapter():
            reference_half = low_precision_copy(policy, torch.bfloat16)(**batch).logits.float()
    adapter_effect = (full - plain).abs().max()
    assert (half - full).abs().max() < 0.25 * adapter_effect  # bfloat16 rounding, far below what LoRA changes
    assert (reference_half - plain).abs().max() < 0.25 * adapter_effect
    assert any("lora_" in name for name, _ in policy.named_parameters())  # the copy merged; the policy is intact
