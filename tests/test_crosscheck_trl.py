"""TRL 1.16's DPO numbers against the from-scratch implementation, for every loss type and option."""

import json

import pytest
import torch

from dpo_recipes.cli import main as cli
from dpo_recipes.crosscheck import losses, runner

EXPECTED_DEPARTURES = {
    "ipo": ["ipo_length_normalized"],
    "bco_pair": ["bco_without_reward_shift"],
    "sigmoid label_smoothing=0.1": ["cdpo_label_smoothing_ignored"],
    "sigmoid+bco_pair+sft loss_weights=(0.8, 0.2, 1.0)": ["bco_without_reward_shift"],
}
QUANTITIES = [
    "loss",
    "logps/chosen",
    "logps/rejected",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "entropy",
    "logits/chosen",
    "logits/rejected",
    "mean_token_accuracy",
    "num_tokens",
    "grad norm ratio",
    "grad 1 - cosine",
    "per pair (8 pairs)",
    "positive control: 1% off",
]


@pytest.mark.parametrize(
    ("policy", "dtype"), [("lora", "float32"), ("full", "float32"), ("qlora", "float32"), ("lora", "bfloat16")]
)
def test_every_loss_type_and_option_matches_trl_or_a_named_departure(tiny_sft_path, policy, dtype):
    results = runner.crosscheck(["all"], policy=policy, dtype=dtype)
    assert {loss for r in results for loss in r.setting.split()[0].split("+")} == set(runner.LOSS_TYPES)
    for result in results:
        assert [row.quantity for row in result.rows] == QUANTITIES
        assert result.passed, runner.render([result])
        assert result.departures == EXPECTED_DEPARTURES.get(result.setting, []), result.setting
    ipo = next(r for r in results if r.setting == "ipo").rows[0]
    assert ipo.verdict == "departure" and abs(ipo.trl - ipo.variant) <= ipo.tolerance * abs(ipo.variant)
    assert abs(ipo.trl - ipo.reference) > 10 * ipo.tolerance * abs(ipo.reference)  # far beyond rounding
    rows = {row.quantity: row for row in results[0].rows}
    assert rows["rewards/chosen"].trl != 0 and rows["grad 1 - cosine"].trl < 1e-3  # a real, moved policy


def test_a_wrong_reference_is_caught(tiny_sft_path, monkeypatch):
    """The check can fail: a hinge written with the wrong margin (2 instead of 1) is an unexplained mismatch."""
    monkeypatch.setattr(losses, "hinge", lambda h, beta: torch.relu(2 - beta * h))
    (result,) = runner.crosscheck(["hinge"])
    rows = {row.quantity: row for row in result.rows}
    assert not result.passed and rows["loss"].verdict == "MISMATCH"
    assert "MISMATCH" in {rows["grad norm ratio"].verdict, rows["grad 1 - cosine"].verdict}  # the gradient too
    assert rows["positive control: 1% off"].verdict == "ok"


@pytest.mark.parametrize(
    ("policy", "dtype"), [("lora", "float32"), ("full", "float32"), ("qlora", "float32"), ("lora", "bfloat16")]
)
def test_training_paths_agree_on_unmodified_trl(tiny_sft_path, policy, dtype):
    rows = {row.quantity.split(" (")[0]: row for row in runner.training_checks(policy, dtype=dtype)}
    assert all(row.verdict in ("ok", "departure") for row in rows.values()), [(q, r.verdict) for q, r in rows.items()]
    assert rows["evaluate(), precomputed ref"].verdict == "ok" and rows["ties: rewards/accuracies"].trl == 0.0
    truncating = [
        row for quantity, row in rows.items() if quantity.startswith("batch") and "0 truncated" not in quantity
    ]
    assert len(truncating) >= 3  # the batch check reached max_length, in both modes, and dropped pairs
    packing = [row for quantity, row in rows.items() if quantity.startswith("packed vs padded")]
    assert len(packing) == 5 and rows["packed negative control: positions not reset"].verdict == "ok"
    for loss_type in ("sigmoid", "ipo", "hinge"):  # equal micro-batches match; 8 pairs in micro-batches of 3 do not
        assert rows[f"{loss_type}: 8x1 vs micro-batches of 1"].verdict == "ok"
        assert rows[f"{loss_type}: 8x1 vs micro-batches of 3"].verdict == "departure"


def test_cli_writes_json_and_fails_on_an_unexplained_difference(tiny_sft_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "crosscheck.json"
    cli(["crosscheck", "--loss-type", "ipo", "sigmoid", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "PASS  ipo" in printed and "Departure ipo_length_normalized" in printed
    assert "OK        sigmoid: 8x1 vs micro-batches of 1" in printed
    assert (
        "DEPARTURE sigmoid: 8x1 vs micro-batches of 3" in printed and "accumulation_averages_micro_batches" in printed
    )
    report = json.loads(out.read_text())
    assert [r["setting"] for r in report["results"]] == ["ipo", "sigmoid"]
    assert all(r["passed"] for r in report["results"]) and len(report["extra_checks"]) == 18

    monkeypatch.setattr(losses, "apo_zero", lambda c, r, beta: 1 - torch.sigmoid(beta * c))
    with pytest.raises(SystemExit, match="unexplained differences in: apo_zero"):
        cli(["crosscheck", "--loss-type", "apo_zero", "--skip-training-checks"])


def test_cli_checks_the_loss_settings_of_a_recipe_yaml(tiny_sft_path, tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("loss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.3]\nbeta: 0.2\nlearning_rate: 1.0e-6\n")
    cli(["crosscheck", "--config", str(config), "--skip-training-checks"])
    assert "PASS  sigmoid+sft loss_weights=(1.0, 0.3) beta=0.2" in capsys.readouterr().out
