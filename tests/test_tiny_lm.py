import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpo_recipes.worlds import embedded
from dpo_recipes.worlds.tiny_lm import build_tiny_model, train_tokenizer
from dpo_recipes.worlds.toy_world import ToyWorld

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Describe the red fox."},
    {"role": "assistant", "content": "The red fox is superb."},
]


def test_tokenizer_is_deterministic_and_round_trips_any_text():
    first, second = train_tokenizer(ToyWorld().corpus()), train_tokenizer(ToyWorld().corpus())
    assert first.get_vocab() == second.get_vocab()
    text = "Ünïcode — emoji 🦊 and a word never seen: zygomorphic"
    assert first.decode(first(text)["input_ids"]) == text  # byte-level: nothing maps to <unk>


def test_zephyr_chat_template(tiny_tokenizer):
    rendered = tiny_tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    assert rendered == (
        "<|system|>\nBe brief.</s>\n<|user|>\nDescribe the red fox.</s>\n<|assistant|>\nThe red fox is superb.</s>\n"
    )
    prompt = tiny_tokenizer.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\nDescribe the red fox.</s>\n<|assistant|>\n")


def test_tokenized_prompt_is_a_prefix_of_prompt_plus_completion(tiny_tokenizer):
    """TRL splits prompt and completion where their tokenizations diverge; here they never do."""
    for row in ToyWorld().split("test_prefs")[:50]:
        prompt = tiny_tokenizer.apply_chat_template(row["chosen"][:1], add_generation_prompt=True, return_dict=True)
        full = tiny_tokenizer.apply_chat_template(row["chosen"], return_dict=True)
        assert full["input_ids"][: len(prompt["input_ids"])] == prompt["input_ids"]


def test_model_is_small_mistral_and_seeded():
    tokenizer = train_tokenizer(ToyWorld().corpus())
    model = build_tiny_model(tokenizer, seed=0)
    assert model.config.model_type == "mistral"
    assert sum(p.numel() for p in model.parameters()) <= 5_000_000
    same, other = build_tiny_model(tokenizer, seed=0), build_tiny_model(tokenizer, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), same.parameters(), strict=True))
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)


def test_embedded_sft_model_loads_with_plain_transformers_and_learned_the_format(tiny_sft_path, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    assert AutoTokenizer.from_pretrained(embedded.resolve(embedded.TINY_BASE)).get_vocab() == tiny_tokenizer.get_vocab()
    input_ids = tiny_tokenizer.apply_chat_template(
        CONVERSATION[1:2], add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )["input_ids"]
    output = model.generate(input_ids, max_new_tokens=24, do_sample=False)
    answer = tiny_tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)
    assert "red fox" in answer  # the SFT model answers about the subject it was asked about
    assert output[0, -1].item() in (tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id)  # and stops
