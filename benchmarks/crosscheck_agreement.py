"""How closely TRL and the from-scratch cross-check agree, per precision: the measurements behind the
tolerances in dpo_recipes/crosscheck/tolerances.py.

    python benchmarks/crosscheck_agreement.py            # every policy x dtype (about 2 minutes on 2 CPU cores)
    python benchmarks/crosscheck_agreement.py lora/float32 qlora/float32

For each policy and compute dtype it verifies every loss type and option (26 settings) on the embedded model
and prints, per quantity, the worst disagreement over the settings next to the tolerance it is judged by, then
the verdicts of the training-path checks. Writes benchmarks/results/crosscheck_agreement.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dpo_recipes.crosscheck import runner
from dpo_recipes.files import atomic_write_text

COMBINATIONS = ["lora/float32", "full/float32", "qlora/float32", "lora/bfloat16", "qlora/bfloat16", "full/bfloat16"]
RESULTS = Path(__file__).parent / "results" / "crosscheck_agreement.json"


def worst(results) -> dict[str, dict]:
    """Per quantity: the worst error over all settings (relative for values, |x − 1| or x for gradients)."""
    out = {}
    for result in results:
        for row in result.rows:
            expected = row.variant if row.variant is not None and row.quantity == "loss" else row.reference
            error = abs(row.trl - expected)
            relative = error if row.kind == "gradient" else error / max(abs(expected), 1e-12)
            if row.quantity not in out or relative > out[row.quantity]["error"]:
                out[row.quantity] = {
                    "error": relative,
                    "absolute": error,
                    "setting": result.setting,
                    "tolerance": row.tolerance,
                    "verdict": row.verdict,
                }
    return out


def measure(combination: str) -> dict:
    policy, dtype = combination.split("/")
    started = time.time()
    results = runner.crosscheck(["all"], policy=policy, dtype=dtype)
    paths = runner.training_checks(policy, dtype=dtype)
    return {
        "precision": results[0].dtype,
        "seconds": round(time.time() - started),
        "failed": [r.setting for r in results if not r.passed],
        "worst": worst(results),
        "training_paths": [{"check": row.quantity, "value": row.trl, "verdict": row.verdict} for row in paths],
    }


def main(combinations: list[str]) -> dict:
    measured = {}
    for combination in combinations:
        measured[combination] = entry = measure(combination)
        failing = entry["failed"] or "none"
        print(f"\n{combination}: {entry['precision']} ({entry['seconds']} s); settings failing: {failing}")
        print(f"  {'quantity':<26} {'worst rel':>10} {'worst abs':>10} {'tolerance':>10}  setting")
        for quantity, w in entry["worst"].items():
            print(
                f"  {quantity:<26} {w['error']:>10.2e} {w['absolute']:>10.2e} {w['tolerance']:>10.0e}  {w['setting']}"
            )
        for check in entry["training_paths"]:
            print(f"  {check['verdict'].upper():<9} {check['check']}")
    atomic_write_text(RESULTS, json.dumps(measured, indent=1, default=str) + "\n")
    return measured


if __name__ == "__main__":
    main(sys.argv[1:] or COMBINATIONS)
