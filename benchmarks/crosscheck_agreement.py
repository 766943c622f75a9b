"""How much of each derived bound the cross-check's real differences use, in several numeric environments.

The cross-check's bounds are derived from the computation (dpo_recipes/crosscheck/tolerances.py), not calibrated;
this script only checks that they hold with room to spare where the numbers come out differently: one and two
torch threads, each ATen CPU kernel set this CPU allows (ATEN_CPU_CAPABILITY), and tiny models built from another
seed (DPO_RECIPES_SEED: a stand-in for another machine's trained weights). Each environment runs in its own process.

    python benchmarks/crosscheck_agreement.py                   # every environment × policy/dtype (~25 min, 2 cores)
    python benchmarks/crosscheck_agreement.py --quick           # the default environment only (~4 min)

For each policy/dtype it prints, per quantity, the largest share of its bound used (|TRL − ours| / bound; ≤ 1
passes) over every loss setting and environment, the range of the bounds, the settings a 1% error hides in
(bfloat16), and the training-path verdicts. Writes benchmarks/results/crosscheck_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

COMBINATIONS = ["lora/float32", "full/float32", "qlora/float32", "lora/bfloat16"]
RESULTS = Path(__file__).parent / "results" / "crosscheck_agreement.json"


def cpu_capabilities() -> list[str]:
    """The ATen CPU kernel sets this CPU can run, best first (torch picks the best by default)."""
    import torch

    best = torch.backends.cpu.get_cpu_capability().lower()
    order = ["avx512", "avx2", "default"]
    return order[order.index(best) :] if best in order else ["default"]


def environments(quick: bool) -> dict[str, dict[str, str]]:
    if quick:
        return {"default": {}}
    found = {"2 threads": {"OMP_NUM_THREADS": "2"}, "1 thread": {"OMP_NUM_THREADS": "1"}}
    for capability in cpu_capabilities()[1:]:
        found[f"ATEN_CPU_CAPABILITY={capability}"] = {"ATEN_CPU_CAPABILITY": capability}
    found["seed 1 (other weights)"] = {"DPO_RECIPES_SEED": "1"}
    return found


def share(row) -> float:
    """|TRL − ours| / bound of one row (for a departure: against TRL's variant)."""
    expected = row.variant if row.variant is not None and row.quantity == "loss" else row.reference
    if row.kind == "gradient":
        error = abs(row.trl - 1) if "ratio" in row.quantity else row.trl
    else:
        error = abs(row.trl - expected)
    if row.tolerance > 0:
        return error / row.tolerance
    return 0.0 if error == 0 else float("inf")


def measure(combination: str) -> dict:
    """One policy/dtype in this process: every loss setting and the training paths."""
    from dpo_recipes.crosscheck import runner

    policy, dtype = combination.split("/")
    started = time.time()
    results = runner.crosscheck(["all"], policy=policy, dtype=dtype)
    paths = runner.training_checks(policy, dtype=dtype)
    worst: dict[str, dict] = {}
    for result in results:
        for row in result.rows:
            if row.quantity.startswith("positive control"):
                continue
            used = share(row)
            entry = worst.setdefault(row.quantity, {"share": -1.0, "bounds": [row.tolerance, row.tolerance]})
            entry["bounds"] = [min(entry["bounds"][0], row.tolerance), max(entry["bounds"][1], row.tolerance)]
            if used > entry["share"]:
                entry.update(share=used, setting=result.setting)
    return {
        "seconds": round(time.time() - started),
        "failed": [r.setting for r in results if not r.passed],
        "not_sensitive_to_1pct": [r.setting for r in results if not r.sensitive],
        "departures": {r.setting: r.departures for r in results if r.departures},
        "worst": worst,
        "training_paths": [
            {"check": row.quantity, "verdict": row.verdict, "share": share(row) if row.kind == "gradient" else None}
            for row in paths
        ],
    }


def run_environment(name: str, changes: dict[str, str]) -> dict:
    environment = {**os.environ, **changes}
    measured = {}
    for combination in COMBINATIONS:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", combination], capture_output=True, text=True, env=environment
        )
        if done.returncode != 0:  # e.g. torch's bf16 attention under a forced lower ATEN_CPU_CAPABILITY
            measured[combination] = {"crashed": done.stderr.strip().splitlines()[-1]}
            print(f"  {name}: {combination} could not run: {measured[combination]['crashed']}", flush=True)
            continue
        measured[combination] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"  {name}: {combination} done ({measured[combination]['seconds']} s)", flush=True)
    return measured


def table(by_environment: dict[str, dict]) -> list[str]:
    lines = []
    for combination in COMBINATIONS:
        lines.append(f"\n{combination}: largest share of its bound used, over every setting and environment")
        lines.append(f"  {'quantity':<24} {'share':>6} {'bounds (min … max)':>22}  environment, setting")
        ran = {name: env[combination] for name, env in by_environment.items() if "worst" in env[combination]}
        for quantity in next(iter(ran.values()))["worst"]:
            cells = [(entry["worst"][quantity], name) for name, entry in ran.items()]
            top, where = max(cells, key=lambda cell: cell[0]["share"])
            low = min(cell[0]["bounds"][0] for cell in cells)
            high = max(cell[0]["bounds"][1] for cell in cells)
            lines.append(
                f"  {quantity:<24} {top['share']:>6.3f} {low:>10.1e} … {high:<9.1e}  {where}, {top['setting']}"
            )
        for name, env in by_environment.items():
            entry = env[combination]
            if "crashed" in entry:
                lines.append(f"  {name}: could not run ({entry['crashed']})")
                continue
            failing = entry["failed"] + [p["check"] for p in entry["training_paths"] if p["verdict"] == "MISMATCH"]
            lines.append(
                f"  {name}: failing: {failing or 'none'}; 1% hidden by rounding in: "
                f"{entry['not_sensitive_to_1pct'] or 'none'}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the default environment only")
    parser.add_argument("--only", help="comma-separated environment names to run (default: all of them)")
    parser.add_argument("--merge", action="store_true", help="add to the results already in the JSON file")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"the JSON file (default {RESULTS})")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker)))
        return
    import torch

    started = time.time()
    chosen = environments(args.quick)
    if args.only:
        chosen = {name: chosen[name] for name in args.only.split(",")}
    by_environment = json.loads(args.output.read_text()) if args.merge and args.output.exists() else {}
    by_environment.update({name: run_environment(name, changes) for name, changes in chosen.items()})
    lines = table(by_environment)
    print("\n".join(lines))
    print(f"\n{round(time.time() - started)} s; CPU kernels {torch.backends.cpu.get_cpu_capability()}")
    from dpo_recipes.core.files import atomic_write_text

    atomic_write_text(args.output, json.dumps(by_environment, indent=1) + "\n")


if __name__ == "__main__":
    main()
