"""Does a win rate mean what it says? Detectors of judge gaming, reported beside every win rate.

A policy trained against a judge learns what the judge rewards, which need not be what the prompt asked for:
on the main job a lexicon judge (VADER) rewards gushing first-person text, so answers drift off the subject,
grow longer and repeat themselves while the win rate climbs. Each detector measures one such failure, for the
policy's answers and the reference's side by side:

    on_task      the share of answers that do what the prompt asked (built-in review prompts: the answer names
                 the thing to review, or a clear synonym, and is not about the assistant itself)
    fluency      the reference model's mean per-token NLL of the answers ("would the SFT model have written
                 this?"), with the policy's own NLL of its answers beside it
    repetition   distinct-2 (unique word bigrams over all bigrams) and the share of answers repeating a 3-gram
    length_controlled_win_rate
                 the win rate at zero length difference: a logistic regression of the win on the (scaled)
                 difference in words, read at 0 (the idea of AlpacaEval's length-controlled win rate, Dubois et
                 al. 2024, with one regressor)
    second_judge the win rate by a judge that did not make the pairs (default for sentiment: TextBlob's Pattern
                 lexicon, a different method and lexicon from VADER's)

"Judge gaming suspected" is raised when the win rate rises (its 95% interval above ½) while a measure gets worse
for the policy than for the reference beyond its own 95% interval (`gaming_reasons`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dpo_recipes.worlds import pairs
from dpo_recipes.worlds.pairs import ngrams, repeats_a_trigram, words

Z95 = 1.96


def last_user_turn(prompt: list[dict]) -> str:
    return [message["content"] for message in prompt if message["role"] == "user"][-1]


def on_task(prompts: list[list[dict]], policy: list[str], reference: list[str]) -> dict:
    """Shares of on-task answers among the prompts that have a check; skipped (and saying why) if none has."""
    keywords = [pairs.review_keywords(last_user_turn(prompt)) for prompt in prompts]
    checked = [i for i, words in enumerate(keywords) if words]
    if not checked:
        return {"skipped": "no on-task check for these prompts (there is one for the built-in review prompts)"}
    policy_on = [pairs.is_on_task(policy[i], keywords[i]) for i in checked]
    reference_on = [pairs.is_on_task(reference[i], keywords[i]) for i in checked]
    return {
        "policy": sum(policy_on) / len(checked),
        "reference": sum(reference_on) / len(checked),
        "n": len(checked),
        **discordant(policy_on, reference_on),
    }


def discordant(policy: list[bool], reference: list[bool]) -> dict:
    """The prompts where only the policy's answer, or only the reference's, has the property: what a paired
    (McNemar) test of the two shares reads."""
    return {
        "policy_only": sum(p and not r for p, r in zip(policy, reference, strict=True)),
        "reference_only": sum(r and not p for p, r in zip(policy, reference, strict=True)),
    }


def discordant_counts(measure: dict) -> tuple[int, int]:
    return measure["policy_only"], measure["reference_only"]


def mcnemar_z(more: int, fewer: int) -> float:
    """McNemar's statistic (b − c)/√(b + c) on discordant counts: > 1.96 means "more" is beyond chance at 95%."""
    return (more - fewer) / math.sqrt(more + fewer) if more + fewer else 0.0


def repetition(texts: list[str]) -> dict:
    """distinct-2 over all answers (Li et al. 2016) and the share of answers that repeat a word 3-gram."""
    bigrams = [gram for text in texts for gram in ngrams(words(text), 2)]
    return {
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else float("nan"),
        "share_repeated_3gram": sum(map(repeats_a_trigram, texts)) / max(1, len(texts)),
    }


def repetition_of_both(policy: list[str], reference: list[str]) -> dict:
    """`repetition` of each side, and on how many prompts only one side's answer repeats a 3-gram."""
    return {
        "policy": repetition(policy),
        "reference": repetition(reference),
        **discordant(list(map(repeats_a_trigram, policy)), list(map(repeats_a_trigram, reference))),
    }


def judges_differ(first: list[float], second: list[float]) -> dict:
    """Per prompt, each judge's verdict (1 win, ½ tie, 0 loss); the mean of first − second and its stderr: a
    paired comparison of the two win rates on the same answers."""
    return mean_and_stderr(torch.tensor([a - b for a, b in zip(first, second, strict=True)])).as_dict()


def verdicts(policy_rewards: list[float], reference_rewards: list[float]) -> list[float]:
    return [(p > r) + 0.5 * (p == r) for p, r in zip(policy_rewards, reference_rewards, strict=True)]


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


def per_token_nll(sums: torch.Tensor, ids: list[list[int]]) -> list[float]:
    """Each answer's mean negative log-likelihood per token (its EOS included), from its summed log-prob."""
    return [-float(total) / max(1, len(answer)) for total, answer in zip(sums, ids, strict=True)]


def fluency(policy_own, reference_of_policy, reference_own, policy_ids, reference_ids) -> dict:
    """Per-token NLL (nats) from summed log-probs: of the policy's answers under the reference
    (``reference_of_policy``) and under the policy (``policy_own``), and of the reference's own answers under the
    reference (``reference_own``: the level to compare with)."""
    return {
        "reference_nll_of_policy_answers": mean_and_stderr(
            torch.tensor(per_token_nll(reference_of_policy, policy_ids))
        ).as_dict(),
        "reference_nll_of_reference_answers": mean_and_stderr(
            torch.tensor(per_token_nll(reference_own, reference_ids))
        ).as_dict(),
        "policy_nll_of_policy_answers": mean_and_stderr(torch.tensor(per_token_nll(policy_own, policy_ids))).as_dict(),
    }


def logistic_fit(x: torch.Tensor, y: torch.Tensor, slope_ridge: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton's method for P(win) = σ(a + b·x) with fractional outcomes y ∈ [0, 1] (a tie is ½), one
    pseudo-observation y = ½ at x = 0 (so a clean sweep still has a finite intercept) and a ridge on b (so a
    perfect split by length does too). Returns (a, b) and the covariance of the estimate."""
    x, y = torch.cat([x, x.new_zeros(1)]), torch.cat([y, y.new_full((1,), 0.5)])
    design = torch.stack([torch.ones_like(x), x], dim=1)
    ridge = torch.diag(torch.tensor([0.0, slope_ridge], dtype=x.dtype))
    theta = torch.zeros(2, dtype=x.dtype)
    for _ in range(50):
        p = torch.sigmoid(design @ theta)
        gradient = design.T @ (y - p) - ridge @ theta
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge
        step = torch.linalg.solve(hessian, gradient)
        theta = theta + step
        if step.abs().max() < 1e-10:
            break
    p = torch.sigmoid(design @ theta)
    hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge
    return theta, torch.linalg.inv(hessian)


def length_controlled_win_rate(
    policy_rewards: list[float], reference_rewards: list[float], policy: list[str], reference: list[str]
) -> dict:
    """The win rate read at zero length difference, with its 95% interval: σ(a) and σ(a ± 1.96·se(a)), where the
    length difference (policy − reference, in words) is scaled by its standard deviation; ``slope`` > 0 means
    that longer answers win more."""
    y = torch.tensor([(p > r) + 0.5 * (p == r) for p, r in zip(policy_rewards, reference_rewards, strict=True)])
    difference = torch.tensor([len(words(p)) - len(words(r)) for p, r in zip(policy, reference, strict=True)])
    x = difference.double()
    scale = x.std().item() if len(x) > 1 and x.std().item() > 0 else 1.0
    theta, covariance = logistic_fit(x / scale, y.double())
    stderr = math.sqrt(covariance[0, 0].item())
    sigma = lambda value: 1 / (1 + math.exp(-value))  # noqa: E731
    return {
        "win_rate": sigma(theta[0].item()),
        "ci95": [sigma(theta[0].item() - Z95 * stderr), sigma(theta[0].item() + Z95 * stderr)],
        "slope_per_sd": theta[1].item(),
        "mean_word_difference": difference.double().mean().item(),
    }


# A rise in the reference's per-token NLL smaller than this comes with any policy that moved at all (KL of a few
# nats over ~30 tokens is ~0.1 nats/token); only a larger one, beyond its interval too, counts as a fall in fluency.
FLUENCY_MARGIN = 0.25
# Likewise a few more sampled answers repeating a 3-gram (0 → 4 of 64 at T = 1) is noise of that size; a rise of
# the share by more than this, beyond its interval too, is the degeneration of a gamed judge (0.14 → 0.58).
REPETITION_MARGIN = 0.10


def gaming_reasons(summary: dict, quality: dict) -> list[str]:
    """Why judge gaming is suspected at one temperature: the win rate rises (its interval is above ½) while
    another measure gets worse for the policy than for the reference beyond its 95% interval, paired on the same
    prompts where it can be: fewer on-task answers (McNemar), more answers repeating a 3-gram (McNemar, and by
    more than REPETITION_MARGIN), a second judge that prefers the reference (its interval below ½), or a rise of
    the reference's NLL beyond its interval and FLUENCY_MARGIN. How far the two judges' verdicts differ is
    reported (``second_judge.difference``) but is no verdict by itself: pairs made by one judge always favour it
    somewhat. Empty when nothing is suspected."""
    if summary["ci95"][0] <= 0.5:
        return []
    reasons = []
    task = quality["on_task"]
    if "n" in task and mcnemar_z(task["reference_only"], task["policy_only"]) > Z95:
        reasons.append(
            f"on-task fell from {task['reference']:.2f} to {task['policy']:.2f} ({task['reference_only']} prompts "
            f"lost, {task['policy_only']} gained)"
        )
    repeats = quality["repetition"]
    rise = repeats["policy"]["share_repeated_3gram"] - repeats["reference"]["share_repeated_3gram"]
    if "policy_only" in repeats and rise > REPETITION_MARGIN and mcnemar_z(*discordant_counts(repeats)) > Z95:
        reasons.append(
            f"answers repeating a 3-gram rose from {repeats['reference']['share_repeated_3gram']:.2f} to "
            f"{repeats['policy']['share_repeated_3gram']:.2f}"
        )
    nll = quality["fluency"]
    if nll:
        of_policy, of_reference = nll["reference_nll_of_policy_answers"], nll["reference_nll_of_reference_answers"]
        rise = of_policy["mean"] - of_reference["mean"]
        if rise > max(FLUENCY_MARGIN, Z95 * math.hypot(of_policy["stderr"], of_reference["stderr"])):
            reasons.append(
                f"the reference's NLL of the answers rose from {of_reference['mean']:.2f} to "
                f"{of_policy['mean']:.2f} nats/token"
            )
    second = quality["second_judge"]
    if "ci95" in second and second["ci95"][1] < 0.5:
        reasons.append(
            f"the second judge ({second['judge']}) prefers the reference: {second['win_rate']:.2f} "
            f"{fmt_interval(second['ci95'])} against {summary['win_rate']:.2f} {fmt_interval(summary['ci95'])}"
        )
    return reasons


def fmt_interval(interval: list[float]) -> str:
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]"
