"""What DPO did, measured: the policy against its reference on held-out prompts, judged by a reward.

The win rate follows the DPO paper's protocol in miniature: both models answer the same held-out prompts
(greedily, or sampled at a temperature), a judge scores both answers, a win counts 1 and a tie ½. The KL to
the reference is estimated from the policy's own samples.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from peft import PeftModel
from tqdm.auto import tqdm

from dpo_recipes import embedded, toy_world
from dpo_recipes.crosscheck.logprobs import token_logps
from dpo_recipes.data.tokens import completion_batch

Messages = list[dict]
Judge = Callable[[Messages, str], float]  # (prompt messages, response text) -> reward


def toy_world_judge(prompt: Messages, response: str) -> float:
    """The toy world's ground-truth reward of a response to the prompt's last user turn."""
    user_turns = [message["content"] for message in prompt if message["role"] == "user"]
    return toy_world.reward(user_turns[-1], response)


class RewardModelJudge:
    """A reward model (``AutoModelForSequenceClassification`` with one label) scores prompt + response; the
    conversation is rendered with the reward model's own chat template when it has one."""

    def __init__(self, name_or_path: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path = embedded.resolve(name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(f"reward model {name_or_path!r} has {self.model.config.num_labels} labels, not 1")

    @torch.no_grad()
    def __call__(self, prompt: Messages, response: str) -> float:
        conversation = prompt + [{"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in conversation)
        inputs = self.tokenizer(text, return_tensors="pt", truncation=True)
        return self.model(**inputs).logits[0, 0].item()


JUDGES: dict[str, Judge] = {"toy-world": toy_world_judge}


def judge_problem(name: str) -> str | None:
    """Why ``name`` names no judge, or None: checkable before a run, without loading a reward model."""
    if name.startswith("reward-model:") or name in JUDGES:
        return None
    if name.startswith("pairwise"):
        return (f"judge {name!r}: TRL 1.16 ships no pairwise judges (trl.judges was removed); "
                "use a reward model (reward-model:PATH_OR_ID) or toy-world")  # fmt: skip
    return f"unknown judge {name!r}; available judges: {', '.join(sorted(JUDGES))}, reward-model:PATH"


def get_judge(name: str) -> Judge:
    """``toy-world``, or ``reward-model:PATH_OR_ID`` for a sequence-classification reward model."""
    problem = judge_problem(name)
    if problem:
        raise KeyError(problem)
    if name.startswith("reward-model:"):
        return RewardModelJudge(name.removeprefix("reward-model:"))
    return JUDGES[name]


@torch.no_grad()
def generate_ids(model, tokenizer, prompts: list[Messages], max_new_tokens: int = 48, temperature: float = 0.0,
                 seed: int = 0, batch_size: int = 64, desc: str = "Generating") -> list[list[int]]:  # fmt: skip
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
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[start : start + batch_size]]  # fmt: skip
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


def generate(model, tokenizer, prompts: list[Messages], max_new_tokens: int = 48, temperature: float = 0.0,
             seed: int = 0, desc: str = "Generating") -> list[str]:  # fmt: skip
    """Completion texts (see `generate_ids`)."""
    ids = generate_ids(model, tokenizer, prompts, max_new_tokens, temperature, seed, desc=desc)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


@torch.no_grad()
def completion_logps(model, tokenizer, prompts: list[Messages], completions: list[list[int]],
                     batch_size: int = 32) -> torch.Tensor:  # fmt: skip
    """log π(y|x) (float64, summed over completion tokens) of given completion token ids after chat prompts."""
    was_training = model.training
    model.eval()
    values = []
    for start in range(0, len(prompts), batch_size):
        sequences = []
        for prompt, completion in zip(prompts[start : start + batch_size], completions[start : start + batch_size],
                                      strict=True):  # fmt: skip
            prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)
            sequences.append((list(prompt_ids["input_ids"]), list(prompt_ids["input_ids"]) + list(completion)))
        batch = {k: v.to(model.device) for k, v in completion_batch(sequences, tokenizer.pad_token_id).items()}
        values.append(token_logps(model, **batch).sequence().cpu())
    model.train(was_training)
    return torch.cat(values)


@dataclass
class Estimate:
    mean: float
    stderr: float

    def as_dict(self) -> dict:
        return {"mean": self.mean, "stderr": self.stderr}


def mean_and_stderr(values: torch.Tensor) -> Estimate:
    values = values.double()
    stderr = values.std(unbiased=True).item() / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return Estimate(values.mean().item(), stderr)


def kl_to_reference(model, tokenizer, prompts: list[Messages], samples: list[list[int]], ref_model=None) -> Estimate:
    """Sequence-level KL(π‖π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)], estimated from the policy's own
    samples (``samples`` must be drawn from ``model`` at temperature 1), with its standard error."""
    policy = completion_logps(model, tokenizer, prompts, samples)
    with as_reference(model, ref_model) as reference_model:
        reference = completion_logps(reference_model, tokenizer, prompts, samples)
    return mean_and_stderr(policy - reference)


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

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        """Wilson score interval (95% by default), counting a tie as half a win."""
        n, p = self.n, self.rate
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def as_dict(self) -> dict:
        low, high = self.interval()
        return {**asdict(self), "n": self.n, "win_rate": self.rate, "ci95": [low, high]}


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


def compare_with_reference(
    model,
    tokenizer,
    prompts: list[Messages],
    judge: Judge,
    ref_model=None,
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
) -> Comparison:
    """Policy and reference answer the same prompts (greedy at temperature 0, else sampled); the judge scores."""
    policy = generate(model, tokenizer, prompts, max_new_tokens, temperature, seed, desc="Policy answers")
    with as_reference(model, ref_model) as reference_model:
        reference = generate(reference_model, tokenizer, prompts, max_new_tokens, temperature, seed,
                             desc="Reference answers")  # fmt: skip
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
