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
