"""What DPO did, measured: the policy against its reference on held-out prompts, judged by a reward.

The win rate follows the DPO paper's protocol in miniature: both models answer the same held-out prompts
(greedily, or sampled at a temperature), a judge scores both answers, a win counts 1 and a tie ½. The KL to
the reference is estimated from the policy's own samples.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field

import torch

from dpo_recipes.core.generation import answer_cache, completion_logps, decode, generate_ids, generation_dtype
from dpo_recipes.core.scoring import as_reference
from dpo_recipes.evaluation import quality
from dpo_recipes.evaluation.quality import Estimate, mean_and_stderr
from dpo_recipes.worlds.judges import Judge, Messages

logger = logging.getLogger(__name__)


def kl_to_reference(model, tokenizer, prompts: list[Messages], samples: list[list[int]], ref_model=None) -> Estimate:
    """Sequence-level KL(π‖π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)], estimated from the policy's own
    samples (``samples`` must be drawn from ``model`` at temperature 1), with its standard error."""
    policy = completion_logps(model, tokenizer, prompts, samples)
    with as_reference(model, ref_model) as reference_model:
        reference = completion_logps(reference_model, tokenizer, prompts, samples)
    return mean_and_stderr(policy - reference)


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


def style(texts: list[str]) -> dict:
    """Length and shape of answers, where a judge's exploitation shows: mean words, mean sentences, and the
    share of answers with more than one sentence (the review prompts ask for one)."""
    sentences = [len([part for part in re.split(r"[.!?]+", text) if part.strip()]) for text in texts]
    n = max(1, len(texts))
    return {
        "mean_words": sum(len(text.split()) for text in texts) / n,
        "mean_sentences": sum(sentences) / n,
        "share_multi_sentence": sum(count > 1 for count in sentences) / n,
    }


@dataclass
class Comparison:
    """Policy and reference answers to the same prompts, with their judged rewards."""

    prompts: list[Messages]
    policy: list[str]
    reference: list[str]
    policy_rewards: list[float]
    reference_rewards: list[float]
    policy_ids: list[list[int]] | None = None  # the policy's completion tokens (a KL estimate reads them)
    reference_ids: list[list[int]] | None = None
    reference_logps: torch.Tensor | None = None  # log π_ref of the reference's answers (from the answer cache)
    _policy_answer_logps: tuple | None = field(default=None, init=False, repr=False)

    def policy_answer_logps(self, model, tokenizer, ref_model=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(log π, log π_ref) of the policy's answers, computed once: fluency and the KL estimate read both."""
        if self._policy_answer_logps is None:
            own = completion_logps(model, tokenizer, self.prompts, self.policy_ids)
            with as_reference(model, ref_model) as reference_model:
                under_reference = completion_logps(reference_model, tokenizer, self.prompts, self.policy_ids)
            self._policy_answer_logps = own, under_reference
        return self._policy_answer_logps

    @property
    def win_rate(self) -> WinRate:
        return win_rate(self.policy_rewards, self.reference_rewards)

    def summary(self) -> dict:
        n = len(self.prompts)
        policy_style, reference_style = style(self.policy), style(self.reference)
        return {
            **self.win_rate.as_dict(),
            "mean_reward_policy": sum(self.policy_rewards) / n,
            "mean_reward_reference": sum(self.reference_rewards) / n,
            "mean_length_policy": sum(len(text) for text in self.policy) / n,
            "mean_length_reference": sum(len(text) for text in self.reference) / n,
            **{f"{key}_policy": value for key, value in policy_style.items()},
            **{f"{key}_reference": value for key, value in reference_style.items()},
        }


def reference_answers(model, tokenizer, prompts, ref_model=None, max_new_tokens=48, temperature=0.0, seed=0):
    """The reference's answers (token ids) and their log π_ref, through the answer cache: they depend only on the
    reference's
    weights, the prompts and the sampling settings (greedy: not even on the seed), not on the policy or β."""
    with as_reference(model, ref_model) as reference_model:
        return answer_cache().generate_ids(
            reference_model,
            tokenizer,
            prompts,
            max_new_tokens,
            temperature,
            seed,
            adapter_disabled=ref_model is None,
            desc="Reference answers",
            with_logps=True,
        )


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
    """Policy and reference answer the same prompts (greedy at temperature 0, else sampled); the judge scores.
    The reference's answers come from the answer cache (`reference_answers`) when an earlier run made them."""
    policy_ids = generate_ids(model, tokenizer, prompts, max_new_tokens, temperature, seed, desc="Policy answers")
    reference_ids, reference_logps = reference_answers(
        model, tokenizer, prompts, ref_model, max_new_tokens, temperature, seed
    )
    policy, reference = decode(tokenizer, policy_ids), decode(tokenizer, reference_ids)
    return Comparison(
        prompts=prompts,
        policy=policy,
        reference=reference,
        policy_rewards=[judge(p, text) for p, text in zip(prompts, policy, strict=True)],
        reference_rewards=[judge(p, text) for p, text in zip(prompts, reference, strict=True)],
        policy_ids=policy_ids,
        reference_ids=reference_ids,
        reference_logps=reference_logps,
    )


def quality_of(comparison: Comparison, model, tokenizer, ref_model=None, second_judge=None) -> dict:
    """The quality section of one comparison (`dpo_recipes.evaluation.quality`): on-task, fluency, repetition,
    the length-controlled win rate and the second judge's win rate (``second_judge``: (name, judge) or None), and
    the reasons to suspect judge gaming (none: an empty list)."""
    c = comparison
    result = {
        "on_task": quality.on_task(c.prompts, c.policy, c.reference),
        "fluency": quality.fluency(
            *c.policy_answer_logps(model, tokenizer, ref_model), c.reference_logps, c.policy_ids, c.reference_ids
        ),
        "repetition": quality.repetition_of_both(c.policy, c.reference),
        "length_controlled_win_rate": quality.length_controlled_win_rate(
            c.policy_rewards, c.reference_rewards, c.policy, c.reference
        ),
        "second_judge": {"skipped": "no second judge (set --second_judge)"},
    }
    if second_judge:
        name, judge = second_judge
        policy_rewards = [judge(p, text) for p, text in zip(c.prompts, c.policy, strict=True)]
        reference_rewards = [judge(p, text) for p, text in zip(c.prompts, c.reference, strict=True)]
        difference = quality.judges_differ(
            quality.verdicts(c.policy_rewards, c.reference_rewards), quality.verdicts(policy_rewards, reference_rewards)
        )
        second = win_rate(policy_rewards, reference_rewards)
        result["second_judge"] = {"judge": name, **second.as_dict(), "difference": difference}
    result["gaming_reasons"] = quality.gaming_reasons(c.win_rate.as_dict(), result)
    return result


def compare_across_temperatures(
    model,
    tokenizer,
    prompts: list[Messages],
    judge: Judge,
    ref_model=None,
    temperatures=(0.0,),
    max_new_tokens: int = 48,
    seed: int = 0,
    second_judge: tuple[str, Judge] | None = None,
) -> tuple[dict, dict[float, Comparison]]:
    """Win rate, judged rewards, answer style and quality (`quality_of`) at each temperature, and KL(π‖π_ref) from
    the policy's samples at temperature 1 (those of the comparison at T = 1 when there is one, else drawn for it).

    Returns (results: {"temperatures": [summary per temperature], "kl": {...}, "quality": {...}},
    {temperature: Comparison}); ``quality`` has one entry per temperature and the gaming verdict.
    """
    comparisons = {
        t: compare_with_reference(model, tokenizer, prompts, judge, ref_model, max_new_tokens, t, seed)
        for t in temperatures
    }
    per_temperature = [
        {"temperature": t, **quality_of(comparison, model, tokenizer, ref_model, second_judge)}
        for t, comparison in comparisons.items()
    ]
    reasons = [f"T = {q['temperature']:g}: {reason}" for q in per_temperature for reason in q["gaming_reasons"]]
    if reasons:
        logger.warning("Judge gaming suspected: %s", "; ".join(reasons))
    if 1.0 in comparisons:  # the policy's samples at T = 1, and both log-probs of them, are already there
        policy_logps, reference_logps = comparisons[1.0].policy_answer_logps(model, tokenizer, ref_model)
        kl = mean_and_stderr(policy_logps - reference_logps)
    else:
        samples = generate_ids(model, tokenizer, prompts, max_new_tokens, 1.0, seed + 1, desc="KL samples")
        kl = kl_to_reference(model, tokenizer, prompts, samples, ref_model)
    results = {
        "generated_in": str(generation_dtype(model)).removeprefix("torch."),  # the answers' precision
        "temperatures": [{"temperature": t, **comparison.summary()} for t, comparison in comparisons.items()],
        "kl": kl.as_dict(),
        "quality": {"gaming_suspected": bool(reasons), "reasons": reasons, "temperatures": per_temperature},
    }
    return results, comparisons


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
