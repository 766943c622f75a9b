"""What DPO did, measured: the policy against its reference on held-out prompts, judged by a reward.

The win rate follows the DPO paper's protocol in miniature: both models answer the same held-out prompts
(greedy decoding here), a judge scores both answers, a win counts 1 and a tie ½.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from dpo_recipes import toy_world

Messages = list[dict]
Judge = Callable[[Messages, str], float]  # (prompt messages, response text) -> reward


def toy_world_judge(prompt: Messages, response: str) -> float:
    """The toy world's ground-truth reward of a response to the prompt's last user turn."""
    user_turns = [message["content"] for message in prompt if message["role"] == "user"]
    return toy_world.reward(user_turns[-1], response)


JUDGES: dict[str, Judge] = {"toy-world": toy_world_judge}


def get_judge(name: str) -> Judge:
    if name not in JUDGES:
        raise KeyError(f"unknown judge {name!r}; available judges: {', '.join(sorted(JUDGES))}")
    return JUDGES[name]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[Messages], max_new_tokens: int = 48, batch_size: int = 64,
             desc: str = "Generating") -> list[str]:  # fmt: skip
    """Greedy completions of chat prompts (left-padded batches, stopping at EOS)."""
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"
    completions = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc):
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                 for p in prompts[start : start + batch_size]]  # fmt: skip
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        output = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        completions += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    model.train(was_training)
    return completions


@contextlib.contextmanager
def as_reference(model, ref_model=None) -> Iterator[object]:
    """The reference of a run: its separate ``ref_model``, or the LoRA policy with its adapter disabled."""
    if ref_model is not None:
        yield ref_model
    elif isinstance(model, PeftModel):
        with model.disable_adapter():
            yield model
    else:
        raise ValueError("a full fine-tune without a separate ref_model has no reference left after training")


@dataclass
class WinRate:
    wins: int
    ties: int
    losses: int

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def rate(self) -> float:
        """Wins plus half the ties, over all comparisons."""
        return (self.wins + 0.5 * self.ties) / self.n

    def as_dict(self) -> dict:
        return {**asdict(self), "n": self.n, "win_rate": self.rate}


def win_rate(policy_rewards: list[float], reference_rewards: list[float]) -> WinRate:
    pairs = list(zip(policy_rewards, reference_rewards, strict=True))
    return WinRate(
        wins=sum(p > r for p, r in pairs), ties=sum(p == r for p, r in pairs), losses=sum(p < r for p, r in pairs)
    )


@dataclass
class Comparison:
    """Policy and reference answers to the same prompts, with their judged rewards."""

    prompts: list[Messages]
    policy: list[str]
    reference: list[str]
    policy_rewards: list[float]
    reference_rewards: list[float]

    @property
    def win_rate(self) -> WinRate:
        return win_rate(self.policy_rewards, self.reference_rewards)

    def summary(self) -> dict:
        n = len(self.prompts)
        return {
            **self.win_rate.as_dict(),
            "mean_reward_policy": sum(self.policy_rewards) / n,
            "mean_reward_reference": sum(self.reference_rewards) / n,
            "mean_length_policy": sum(len(text) for text in self.policy) / n,
            "mean_length_reference": sum(len(text) for text in self.reference) / n,
        }


def compare_with_reference(model, tokenizer, prompts: list[Messages], judge: Judge, ref_model=None,
                           max_new_tokens: int = 48) -> Comparison:  # fmt: skip
    policy = generate(model, tokenizer, prompts, max_new_tokens, desc="Policy answers")
    with as_reference(model, ref_model) as reference_model:
        reference = generate(reference_model, tokenizer, prompts, max_new_tokens, desc="Reference answers")
    return Comparison(
        prompts=prompts,
        policy=policy,
        reference=reference,
        policy_rewards=[judge(p, text) for p, text in zip(prompts, policy, strict=True)],
        reference_rewards=[judge(p, text) for p, text in zip(prompts, reference, strict=True)],
    )


def unique_prompts(dataset, limit: int) -> list[Messages]:
    """The first ``limit`` distinct prompts of a preference dataset, in order."""
    seen, prompts = set(), []
    for row in dataset:  # rows, not a column: works for streaming datasets too
        prompt = row["prompt"]
        key = repr(prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
        if len(prompts) == limit:
            break
    return prompts
