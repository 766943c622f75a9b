"""The β-sweep recipe on a reduced configuration: frontier points, comparison points, plots, report."""

import json
import math

import pytest

from .conftest import REPO, load_recipe_module, run_flags


@pytest.mark.slow
def test_beta_sweep_writes_the_frontier_and_win_rate_curves(tmp_path, tiny_sft_path):
    sweep = load_recipe_module("beta_sweep")
    args = sweep.parse_args(
        [
            "--config",
            str(REPO / "recipes" / "zephyr_style" / "tiny.yaml"),
            "--betas",
            "0.1,0.5",
            "--output_dir",
            str(tmp_path),
            "--checkpoints",
            "2",
            "--n_prompts",
            "6",
            "--best_of",
            "2,4",
            "--temperatures",
            "0,1",
            "--max_new_tokens",
            "12",
            "--",
            *run_flags(save_strategy=None),
        ]
    )
    result = sweep.main(args)

    assert set(result["frontier"]) == {"β = 0.1", "β = 0.5"}
    for points in result["frontier"].values():
        assert [p["step"] for p in points] == [2, 4]
        assert all(math.isfinite(p["kl"]) and math.isfinite(p["reward"]) for p in points)
    assert result["reference"]["kl"] == 0.0  # the reference against itself
    assert [p["kl"] for p in result["best_of_n"]] == pytest.approx([math.log(2) - 1 / 2, math.log(4) - 3 / 4])
    assert all(len(points) == 2 for points in result["win_rates"].values())
    for name in ("frontier.png", "win_rate_vs_temperature.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "sweep.json").read_text())["reference"] == result["reference"]
    report = (tmp_path / "report.md").read_text()
    assert "| β = 0.5 | 4 |" in report and "best-of-4 from the reference" in report
