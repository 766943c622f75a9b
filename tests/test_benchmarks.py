"""The benchmark suite runs end to end (--quick, a tiny model) and writes its table, JSON and chart.

This checks that the suite cannot rot; it asserts no speed. The figures live in benchmarks/README.md.
"""

import json
import math
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_benchmark_suite_quick_run_writes_table_json_and_chart(tmp_path, tiny_sft_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    variants = results["throughput"]["variants"]
    assert set(variants) == {"lecture loop (a)", "trl", "recipe, speed options off", "recipe, speed options on"}
    assert all(row["s/step"] > 0 and math.isfinite(row["tokens/s"]) for row in variants.values())
    varied = results["throughput_varied"]["s/step"]
    assert set(varied) == {
        "trl",
        "recipe, speed options off",
        "recipe, cached reference",
        "recipe, length grouping",
        "recipe, speed options on",
        "recipe, packed",
        "recipe, packed + cached reference",
        "recipe, packed, token budget",
    }
    assert all(seconds > 0 for seconds in varied.values())
    tokens_per_second = results["throughput_varied"]["real tokens/s"]
    assert set(tokens_per_second) == set(varied) and all(v > 0 for v in tokens_per_second.values())
    assert set(results["memory"]) == {"full", "lora", "qlora"}
    packing = results["memory_packing"]
    assert set(packing) == {"long-tailed, padded", "long-tailed, packed"}
    assert packing["long-tailed, padded"]["real_tokens"] == packing["long-tailed, packed"]["real_tokens"] > 0
    assert 0 < results["efficiency"]["share_of_peak"] < 1.5
    assert len(results["scaling"]["seconds_by_pairs"]) == 2
    readme = (tmp_path / "README.md").read_text()
    for section in ("### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6."):
        assert section in readme
    assert (tmp_path / "benchmarks.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_the_gpu_smoke_script_runs_its_plumbing_on_the_cpu(tmp_path, tiny_sft_path):
    """benchmarks/gpu_smoke.py is for CUDA machines; --cpu runs the same train → evaluate path in float32."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import gpu_smoke

    output = tmp_path / "smoke.json"
    rows = gpu_smoke.main(["--cpu", "--steps", "1", "--output", str(output), "--work_dir", str(tmp_path / "runs")])
    assert [row["precision"] for row in rows] == ["fp32"] and rows[0]["steps"] == 1
    assert 0 <= rows[0]["eval_win_rate_greedy"] <= 1 and rows[0]["s_per_step"] > 0
    assert json.loads(output.read_text())["rows"] == rows


def test_benchmark_sections_survive_a_rewrite_of_the_page(tmp_path):
    """main_job.py and data_path.py each own a marked section of benchmarks/README.md: rewritten in place on a
    rerun, and kept when run.py rewrites the rest of the page."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import common

    page = tmp_path / "README.md"
    page.write_text("# Benchmarks\n\nsuite table\n")
    common.write_readme_section("main_job", "first", page)
    common.write_readme_section("data_path", "rows", page)
    common.write_readme_section("main_job", "second", page)
    text = page.read_text()
    assert "first" not in text and text.index("second") < text.index("rows") and text.startswith("# Benchmarks")
    kept = common.kept_sections(text)
    assert "suite table" not in kept and "second" in kept and "rows" in kept
    assert common.kept_sections("# no sections\n") == ""


def test_the_synthetic_hh_rows_are_rows_the_recipe_accepts():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import random

    from data_path import hh_row

    from dpo_recipes.data.hh_rlhf import hh_rlhf

    rng = random.Random(1)
    for _ in range(50):
        row = hh_rlhf(hh_row(rng))
        assert row["prompt"][-1]["role"] == "user" and row["chosen"][0]["role"] == "assistant"


def test_presets_chart_reads_runs_metrics_and_draws_the_readme_chart(tmp_path):
    """benchmarks/presets_chart.py draws docs/images/main_job.png from finished runs' metrics.json: each run's
    greedy win rate, KL, second judge, repetition and flag are read from where training writes them."""

    def run(name: str, seed, flagged: bool) -> str:
        greedy = {
            "temperature": 0.0,
            "second_judge": {"win_rate": 0.7},
            "repetition": {"policy": {"share_repeated_3gram": 0.3}, "reference": {"share_repeated_3gram": 0.1}},
        }
        metrics = {
            "run": {"seed": seed},
            "win_rate": {
                "win_rate": 0.8,
                "ci95": [0.7, 0.9],
                "kl": {"mean": 4.0, "stderr": 0.4},
                "quality": {"gaming_suspected": flagged, "temperatures": [greedy]},
            },
        }
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
        return str(tmp_path / name)

    output = tmp_path / "chart.png"
    command = [sys.executable, str(REPO / "benchmarks" / "presets_chart.py"), f"a={run('a-s0', 0, False)}"]
    command += [f"b={run('old-seed1', None, True)}", "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sys.path.insert(0, str(REPO / "benchmarks"))
    import presets_chart

    assert presets_chart.greedy_figures(tmp_path / "a-s0")["name"] == "seed0"
    assert presets_chart.greedy_figures(tmp_path / "old-seed1")["name"] == "seed1"  # no seed recorded: the name
