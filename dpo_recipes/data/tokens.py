"""Token ids of a preference row, as TRL 1.16's DPOTrainer makes them (shared by the doctor and evaluation)."""

from __future__ import annotations

import torch


def trl_token_ids(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
    """Prompt ids and prompt+completion ids: the chat template for conversational rows (generation prompt on
    the prompt alone), plain tokenization with EOS appended to the completion for standard rows."""
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(prompt + completion, return_dict=True)["input_ids"]
        return list(prompt_ids), list(full_ids)
    if tokenizer.eos_token and not completion.endswith(tokenizer.eos_token):
        completion += tokenizer.eos_token
    return tokenizer(prompt)["input_ids"], tokenizer(prompt + completion)["input_ids"]


def completion_batch(sequences: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``completion_mask`` from (prompt ids, full ids) pairs; the
    completion is what follows the prompt (TRL's layout)."""
    width = max(len(full) for _, full in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (prompt, full) in enumerate(sequences):
        input_ids[i, : len(full)] = torch.tensor(full)
        attention[i, : len(full)] = 1
        completion[i, len(prompt) : len(full)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}
