"""Baseline (a): the from-scratch DPO loop of the lecture (../shared/seeds/001_*.txt), re-implemented faithfully.

What makes it the baseline, kept on purpose: every sequence is tokenized as prompt + answer text and padded
to ``max_length``; each step runs four separate forwards (policy chosen, policy rejected, reference chosen,
reference rejected); log-probabilities are averaged over *all* non-padding tokens (prompt included), as the
lecture's ``compute_logprobs`` does; AdamW on every weight with gradient clipping at 1.0; a deep-copied, frozen
reference model.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F


class PaddedPairs(torch.utils.data.Dataset):
    """(prompt + chosen, prompt + rejected) token ids, each padded to max_length."""

    def __init__(self, rows: list[dict], tokenizer, max_length: int):
        self.rows, self.tokenizer, self.max_length = rows, tokenizer, max_length

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        row, encoded = self.rows[index], {}
        for key in ("chosen", "rejected"):
            tokens = self.tokenizer(
                row["prompt"] + row[key],
                max_length=self.max_length,
                truncation=True,
                padding="max_length",
                return_tensors="pt",
            )
            encoded[f"{key}_input_ids"] = tokens["input_ids"].squeeze(0)
            encoded[f"{key}_attention_mask"] = tokens["attention_mask"].squeeze(0)
        return encoded


def mean_token_logprob(model, input_ids, attention_mask):
    """The lecture's sequence score: the mean next-token log-probability over the non-padding tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logprobs = F.log_softmax(logits, dim=-1)[:, :-1].gather(2, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = attention_mask[:, 1:].float()
    return (logprobs * mask).sum(-1) / mask.sum(-1)


class LectureDPO:
    def __init__(self, model, beta: float = 0.1, lr: float = 1e-6):
        self.model, self.beta = model, beta
        self.ref_model = copy.deepcopy(model).eval()
        for parameter in self.ref_model.parameters():
            parameter.requires_grad = False
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)

    def step(self, batch) -> float:
        chosen = (batch["chosen_input_ids"], batch["chosen_attention_mask"])
        rejected = (batch["rejected_input_ids"], batch["rejected_attention_mask"])
        policy_chosen = mean_token_logprob(self.model, *chosen)
        policy_rejected = mean_token_logprob(self.model, *rejected)
        with torch.no_grad():
            ref_chosen = mean_token_logprob(self.ref_model, *chosen)
            ref_rejected = mean_token_logprob(self.ref_model, *rejected)
        logits = self.beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
        loss = -F.logsigmoid(logits).mean()
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return loss.item()


def step_times(model, rows: list[dict], tokenizer, batch_size: int, max_length: int, steps: int) -> list[float]:
    """End time of each of ``steps`` training steps (time.perf_counter), the first entry being the start."""
    loader = torch.utils.data.DataLoader(
        PaddedPairs(rows, tokenizer, max_length),
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    trainer, stamps = LectureDPO(model.train()), [time.perf_counter()]
    while len(stamps) <= steps:  # as many epochs as it takes, reshuffled each epoch as the lecture does
        for batch in loader:
            trainer.step(batch)
            stamps.append(time.perf_counter())
            if len(stamps) > steps:
                break
    return stamps
