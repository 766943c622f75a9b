import json
import math

from dpo_recipes.evaluation.comparison import Comparison
from dpo_recipes.evaluation.reporting import (
    CURVES,
    plot_training_curves,
    side_by_side,
    summary_paragraph,
    write_metrics,
    write_report,
)


def _log_history(steps=20):
    logs = []
    for step in range(1, steps + 1):
        logs.append({"step": step, "loss": math.log(2) / step, **{key: 0.1 * step for key in CURVES if key != "loss"}})
        if step % 10 == 0:
            logs.append({"step": step, "eval_loss": 0.5, "eval_rewards/accuracies": 0.9})
    return logs


def test_training_curves_png(tmp_path):
    path = plot_training_curves(_log_history(), tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000  # five panels with lines, not an empty canvas


def _metrics(win_rate):
    return {
        "run": {"model": "m", "dataset": "d", "dataset_recipe": "r"},
        "data": {"train": "train: read 10 rows", "test": "test: read 4 rows"},
        "eval_before": {"eval_rewards/accuracies": 0.0, "eval_loss": 0.6931},
        "eval_after": {"eval_rewards/accuracies": 0.875, "eval_rewards/margins": 1.25, "eval_loss": 0.3},
        "train": {"global_step": 7},
        "win_rate": win_rate,
        "wall_time_s": {"train": 12.0, "total": 30.0},
    }


def test_report_and_metrics_carry_the_computed_numbers(tmp_path):
    comparison = Comparison(
        prompts=[[{"role": "user", "content": "Describe the red fox."}]] * 2,
        policy=["The red fox is superb.", "A | pipe"],
        reference=["The red fox is plain.", ""],
        policy_rewards=[3.0, -1.0],
        reference_rewards=[1.0, -1.0],
    )
    greedy = {"temperature": 0.0, **comparison.summary()}
    kl = {"mean": 0.25, "stderr": 0.05}
    metrics = _metrics({"judge": "toy-world", **greedy, "temperatures": [greedy], "kl": kl})
    write_metrics(tmp_path / "metrics.json", metrics)
    assert json.loads((tmp_path / "metrics.json").read_text())["win_rate"]["win_rate"] == 0.75
    report = write_report(tmp_path / "report.md", metrics, {0.0: comparison}).read_text()
    assert "| rewards/accuracies | 0.000 | 0.875 |" in report
    assert "| 0 | **0.750** | [" in report and "| +1.000 | +0.000 | 4.0 | 2.5 | 1.00 | 0.50 |" in report
    assert "**0.25 ± 0.05** nats" in report
    assert "A \\| pipe" in side_by_side(comparison) and "(empty)" in side_by_side(comparison)
    summary = summary_paragraph(metrics, "out")
    assert "87.5%" in summary and "75.0% of 2" in summary


def test_report_says_why_win_rate_is_missing(tmp_path):
    metrics = _metrics({"skipped": "no judge configured (set --judge)"})
    report = write_report(tmp_path / "report.md", metrics, {}).read_text()
    assert "Not measured: no judge configured" in report
    assert "was not compared with the reference" in summary_paragraph(metrics, "out")


def test_the_model_card_says_what_each_check_covered():
    from dpo_recipes.training.model_card import crosscheck_section

    guard = {
        "form": "policy with its adapter disabled",
        "sequences": 8,
        "max_abs_logp_difference": 1e-5,
        "bound_at_worst": 4e-4,
        "max_implicit_reward": 1e-6,
        "passed": True,
    }
    verdict = {
        "where": "the embedded tiny model, 4 pairs of the toy world, CPU float32",
        "results": [],
        "departures": {},
    }
    text = "\n".join(crosscheck_section(verdict, guard))
    assert "first training batch, on this run's own model and device" in text and "adapter disabled" in text
    assert "on a stand-in, not on this run's model: the embedded tiny model" in text
    skipped = "\n".join(crosscheck_section({"skipped": "--crosscheck false"}, {"skipped": "resumed from a checkpoint"}))
    assert (
        "Reference guard: not run (resumed from a checkpoint)" in skipped and "not run (--crosscheck false)" in skipped
    )
