"""A run's outputs for people: training curves (PNG), metrics.json, report.md and a printed summary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from dpo_recipes.core.files import atomic_path, atomic_write_text
from dpo_recipes.evaluation.comparison import Comparison
from dpo_recipes.evaluation.quality import fmt_interval as interval

CURVES = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG atomically, then free it."""
    with atomic_path(path) as scratch:
        figure.savefig(scratch, dpi=100)
    pyplot().close(figure)
    return Path(path)


def plot_training_curves(log_history: list[dict], path: str | os.PathLike) -> Path:
    """One panel per DPO training metric against the optimizer step (train logs; eval logs as dots)."""
    figure, axes = pyplot().subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2), constrained_layout=True)
    for axis, key in zip(axes, CURVES, strict=True):
        for prefix, style in (("", "-"), ("eval_", "o")):
            logs = [log for log in log_history if prefix + key in log]
            if logs:
                steps, values = [log["step"] for log in logs], [log[prefix + key] for log in logs]
                axis.plot(steps, values, style, label="eval" if prefix else "train")
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend()
    return save_figure(figure, path)


def write_metrics(path: str | os.PathLike, metrics: dict) -> Path:
    return atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True, default=str) + "\n")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def side_by_side(comparison: Comparison, rows: int = 8) -> str:
    """A markdown table of prompts with the reference's and the policy's answers and their rewards."""
    lines = ["| # | prompt | reference (SFT) | reward | policy (DPO) | reward |", "|---|---|---|---|---|---|"]
    for i in range(min(rows, len(comparison.prompts))):
        prompt = comparison.prompts[i][-1]["content"]
        lines.append(
            f"| {i} | {_cell(prompt)} | {_cell(comparison.reference[i])} | {comparison.reference_rewards[i]:+.2f} "
            f"| {_cell(comparison.policy[i])} | {comparison.policy_rewards[i]:+.2f} |"
        )
    return "\n".join(lines)


def temperature_table(points: list[dict]) -> str:
    """A markdown table of the comparison at each temperature: win rate with its interval, the judge's mean
    score of both models, and the answers' length and shape (where gaming a judge shows)."""
    lines = [
        "| temperature | win rate | 95% CI | judge: policy | judge: reference | words: policy | words: reference "
        "| sentences: policy | sentences: reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p['temperature']:g} | **{p['win_rate']:.3f}** | [{p['ci95'][0]:.3f}, {p['ci95'][1]:.3f}] "
            f"| {p['mean_reward_policy']:+.3f} | {p['mean_reward_reference']:+.3f} "
            f"| {p['mean_words_policy']:.1f} | {p['mean_words_reference']:.1f} "
            f"| {p['mean_sentences_policy']:.2f} | {p['mean_sentences_reference']:.2f} |"
        )
    return "\n".join(lines)


def quality_table(quality: dict) -> str:
    """The quality section as markdown: one row per temperature, policy / reference where both are measured,
    then the verdict on judge gaming."""
    lines = [
        "| temperature | on-task | reference NLL (nats/token) | policy's own NLL | distinct-2 | repeated 3-gram "
        "| length-controlled win rate | second judge |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q in quality["temperatures"]:
        task, nll, rep = q["on_task"], q["fluency"], q["repetition"]
        lc, second = q["length_controlled_win_rate"], q["second_judge"]
        on_task = f"{task['policy']:.2f} / {task['reference']:.2f}" if "n" in task else "not checked"
        second_text = (
            f"{second['win_rate']:.2f} {interval(second['ci95'])} ({second['judge']})" if "judge" in second else "none"
        )
        lines.append(
            f"| {q['temperature']:g} "
            f"| {on_task} "
            f"| {nll['reference_nll_of_policy_answers']['mean']:.2f} / "
            f"{nll['reference_nll_of_reference_answers']['mean']:.2f} "
            f"| {nll['policy_nll_of_policy_answers']['mean']:.2f} "
            f"| {rep['policy']['distinct_2']:.2f} / {rep['reference']['distinct_2']:.2f} "
            f"| {rep['policy']['share_repeated_3gram']:.2f} / {rep['reference']['share_repeated_3gram']:.2f} "
            f"| {lc['win_rate']:.2f} {interval(lc['ci95'])} | {second_text} |"
        )
    verdict = (
        "**Judge gaming suspected**: " + "; ".join(quality["reasons"]) + "."
        if quality["gaming_suspected"]
        else "No sign of judge gaming: where the win rate rises, no other measure falls beyond its 95% interval."
    )
    return "\n".join(lines) + "\n\n" + verdict


def quality_lines(quality: dict | None) -> list[str]:
    """The report's quality section (policy / reference in each cell)."""
    if not quality:
        return []
    return [
        "### Quality: is the judge being gamed?",
        "",
        "Policy / reference in each cell. On-task: the answer names the thing it was asked about and is not "
        "about the assistant. Reference NLL: how likely the reference (SFT) model finds the answers. The "
        "length-controlled win rate is read at equal length; the second judge did not make the pairs.",
        "",
        quality_table(quality),
        "",
    ]


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def displacement_section(summary: dict) -> list[str]:
    """Report lines on likelihood displacement (dpo_recipes/training/monitoring.py)."""
    if not summary.get("logged_steps"):
        return []
    verdict = (
        "**Warning: likelihood displacement.** The chosen answers ended *less* likely than under the reference: "
        "DPO widened the margin by pushing both sides down, and mass went to answers in neither set."
        if summary["displaced"]
        else "The chosen answers did not end less likely than under the reference."
    )
    return [
        "## Likelihood displacement",
        "",
        f"Δ log π of the chosen answers against the reference (nats per answer, training batches): final "
        f"{summary['final_chosen']:+.2f}, lowest {summary['min_chosen']:+.2f}; rejected: final "
        f"{summary['final_rejected']:+.2f}. Negative at {summary['displaced_steps']} of "
        f"{summary['logged_steps']} logged steps. {verdict}",
        "",
        "![likelihood displacement](likelihood_displacement.png)",
        "",
    ]


def write_report(path: str | os.PathLike, metrics: dict, comparisons: dict[float, Comparison]) -> Path:
    before, after = metrics["eval_before"], metrics["eval_after"]
    lines = [
        f"# DPO run: {metrics['run']['model']} on {metrics['run']['dataset']}",
        "",
        f"Recipe `{metrics['run']['dataset_recipe']}`; {metrics['data']['train']}; {metrics['data']['test']}.",
        f"Trained {metrics['train']['global_step']} steps in {metrics['wall_time_s']['train']:.0f} s "
        f"(whole run {metrics['wall_time_s']['total']:.0f} s).",
        "",
        f"## Held-out implicit reward (TRL's eval on {metrics.get('eval_pairs', 'the')} test pairs)",
        "",
        "Implicit reward r = β·(log π(y|x) − log π_ref(y|x)); accuracy counts pairs with r(chosen) > r(rejected)"
        " strictly, as TRL does. Before training the policy *is* the reference, so every reward is 0 and the"
        " strict accuracy reads 0.",
        "",
        "| | before (policy = reference) | after |",
        "|---|---|---|",
    ]
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "loss"):
        lines.append(f"| {key} | {_fmt(before.get('eval_' + key))} | {_fmt(after.get('eval_' + key))} |")
    lines += ["", "## Win rate against the reference", ""]
    if not comparisons:
        lines.append(f"Not measured: {metrics['win_rate']['skipped']}")
    else:
        win = metrics["win_rate"]
        first = min(comparisons)
        lines += [
            f"Judge `{win['judge']}`; {win['n']} held-out prompts; both models answer each prompt at each "
            "temperature (0 = greedy); a win counts 1 and a tie ½; 95% Wilson intervals. The reference's columns "
            "are the judge's score and the answers' shape *before* DPO, the policy's *after*. Answers generated "
            f"in {win.get('generated_in', 'float32')}; their log-probabilities (KL, fluency) in the model's dtype.",
            "",
            temperature_table(win["temperatures"]),
            "",
            f"KL(policy ‖ reference), sequence level, from the policy's {win['n']} samples at temperature 1: "
            f"**{win['kl']['mean']:.2f} ± {win['kl']['stderr']:.2f}** nats (mean ± standard error).",
            "",
            *quality_lines(win.get("quality")),
            f"### Side by side (temperature {first:g})",
            "",
            side_by_side(comparisons[first]),
        ]
    lines += ["", *displacement_section(metrics.get("likelihood_displacement", {}))]
    lines += ["", "![training curves](training_curves.png)", ""]
    return atomic_write_text(path, "\n".join(lines))


def summary_paragraph(metrics: dict, output_dir: str) -> str:
    after = metrics["eval_after"]
    win = metrics["win_rate"]
    win_text = (
        f"won {win['win_rate']:.1%} of {win['n']} greedy comparisons against the reference (judge {win['judge']})"
        if "win_rate" in win
        else f"was not compared with the reference ({win['skipped']})"
    )
    if win.get("quality", {}).get("gaming_suspected"):
        win_text += " — JUDGE GAMING SUSPECTED (see report.md)"
    return (
        f"DPO trained {metrics['run']['model']} on {metrics['run']['dataset']} for {metrics['train']['global_step']} "
        f"steps in {metrics['wall_time_s']['train']:.0f} s. On held-out pairs its implicit reward ranks the chosen "
        f"answer above the rejected one {after.get('eval_rewards/accuracies', float('nan')):.1%} of the time "
        f"(mean margin {after.get('eval_rewards/margins', float('nan')):.3f}); the policy {win_text}. "
        f"Adapter, logs, metrics.json, training_curves.png, report.md and the model card (README.md) are in "
        f"{output_dir}."
    )
