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
    "grad rel. L2 error",
    "grad cosine",
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
    assert ipo.verdict == "departure" and abs(ipo.trl - ipo.variant) < 1e-4
    assert abs(ipo.trl - ipo.reference) > 10 * ipo.tolerance * abs(ipo.reference)  # far beyond rounding
    rows = {row.quantity: row for row in results[0].rows}
    assert rows["rewards/chosen"].trl != 0 and abs(rows["grad cosine"].trl - 1) < 1e-4  # a real, moved policy


def test_a_wrong_reference_is_caught(tiny_sft_path, monkeypatch):
    """The check can fail: a hinge written with the wrong margin (2 instead of 1) is an unexplained mismatch."""
    monkeypatch.setattr(losses, "hinge", lambda h, beta: torch.relu(2 - beta * h))
    (result,) = runner.crosscheck(["hinge"])
    assert not result.passed and result.rows[0].verdict == "MISMATCH"
    assert result.rows[-1].verdict == "MISMATCH"  # and the gradient disagrees too


@pytest.mark.parametrize("policy", ["lora", "full"])
def test_precomputed_reference_and_gradient_accumulation(tiny_sft_path, policy):
    precomputed = runner.check_precomputed_reference(policy)
    assert precomputed.verdict == "ok" and precomputed.trl == pytest.approx(precomputed.reference, rel=1e-5)
    accumulation = runner.check_gradient_accumulation(policy)
    assert accumulation.verdict == "ok" and accumulation.trl < 1e-4


def test_cli_writes_json_and_fails_on_an_unexplained_difference(tiny_sft_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "crosscheck.json"
    cli(["crosscheck", "--loss-type", "ipo", "sigmoid", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "PASS  ipo" in printed and "Departure ipo_length_normalized" in printed
    assert "OK        update 8x1 vs 1x8" in printed
    report = json.loads(out.read_text())
    assert [r["setting"] for r in report["results"]] == ["ipo", "sigmoid"]
    assert all(r["passed"] for r in report["results"]) and len(report["extra_checks"]) == 2

    monkeypatch.setattr(losses, "apo_zero", lambda c, r, beta: 1 - torch.sigmoid(beta * c))
    with pytest.raises(SystemExit, match="unexplained differences in: apo_zero"):
        cli(["crosscheck", "--loss-type", "apo_zero", "--skip-training-checks"])


def test_cli_checks_the_loss_settings_of_a_recipe_yaml(tiny_sft_path, tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("loss_type: [sigmoid, sft]\nloss_weights: [1.0, 0.3]\nbeta: 0.2\nlearning_rate: 1.0e-6\n")
    cli(["crosscheck", "--config", str(config), "--skip-training-checks"])
    assert "PASS  sigmoid+sft loss_weights=(1.0, 0.3) beta=0.2" in capsys.readouterr().out
