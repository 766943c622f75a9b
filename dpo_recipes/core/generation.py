"""Answers from a model to chat prompts, and their log-probabilities: what the win rate, the KL estimate and
on-policy pair generation all sample with."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from dpo_recipes.core.scoring import generated_token_ids, sequence_logps

Messages = list[dict]


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts: list[Messages],
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    desc: str = "Generating",
) -> list[list[int]]:
    """Completion token ids (up to and including EOS) for chat prompts: greedy at temperature 0, otherwise
    sampled from the model's own distribution at ``temperature`` (no top-k/top-p truncation, so that the
    samples are the policy's and a KL estimate from them is unbiased)."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    sampling = dict(temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else {}
    completions = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc):
            texts = [
                tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                for p in prompts[start : start + batch_size]
            ]
            batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            output = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
            for row in output[:, batch["input_ids"].shape[1] :].tolist():
                end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
                completions.append(row[:end])
    model.train(was_training)
    return completions


def generate(
    model,
    tokenizer,
    prompts: list[Messages],
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    desc: str = "Generating",
) -> list[str]:
    """Completion texts (see `generate_ids`)."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens, temperature, seed, desc=desc)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def completion_logps(model, tokenizer, prompts: list[Messages], completions: list[list[int]]) -> torch.Tensor:
    """log π(y|x) (float64, summed over completion tokens) of given completion token ids after chat prompts."""
    sequences = [generated_token_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    return sequence_logps(model, sequences, tokenizer.pad_token_id)
