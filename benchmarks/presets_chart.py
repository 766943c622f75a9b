"""The main job's two presets side by side, from the metrics.json of finished runs: the chart of the README.

Left, what the judge that made the pairs says against what it cost: the greedy VADER win rate (Wilson 95%
interval) against KL(π‖π_ref) (± one standard error). Right, two of the gaming detectors: the second judge's
win rate against the share of greedy answers that repeat a 3-gram (the reference's share dashed). A run whose
report raised "judge gaming suspected" is drawn with a red edge.

    python benchmarks/presets_chart.py main=outputs/main-s0,outputs/main-s1 gamed=outputs/gamed-s0 \
        [--output docs/images/main_job.png]

Each run directory is one `make smollm2` (or `smollm2_gamed.yaml`) run, e.g. with `--seed N --output_dir DIR`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")


def greedy_figures(run_dir: Path) -> dict:
    """The figures the chart shows, read from one run's metrics.json (greedy answers: T = 0)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    win, seed = metrics["win_rate"], metrics["run"].get("seed")  # runs before the seed was recorded: their name
    quality = win["quality"]
    greedy = next(entry for entry in quality["temperatures"] if entry["temperature"] == 0)
    return {
        "name": run_dir.name.rsplit("-", 1)[-1] if seed is None else f"seed{seed}",
        "win_rate": win["win_rate"],
        "ci95": win["ci95"],
        "kl": win["kl"]["mean"],
        "kl_stderr": win["kl"]["stderr"],
        "second_judge": greedy["second_judge"]["win_rate"],
        "repeated_policy": greedy["repetition"]["policy"]["share_repeated_3gram"],
        "repeated_reference": greedy["repetition"]["reference"]["share_repeated_3gram"],
        "gaming": quality["gaming_suspected"],
    }


def chart(groups: dict[str, list[dict]], output: Path) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for colour, (label, runs) in zip(COLOURS, groups.items(), strict=False):
        for i, run in enumerate(runs):
            edge = "red" if run["gaming"] else colour
            low, high = run["ci95"]
            left.errorbar(
                run["kl"],
                run["win_rate"],
                xerr=run["kl_stderr"],
                yerr=[[run["win_rate"] - low], [high - run["win_rate"]]],
                fmt="o",
                color=colour,
                markeredgecolor=edge,
                markeredgewidth=2,
            )
            right.plot(
                run["repeated_policy"], run["second_judge"], "o", color=colour, markeredgecolor=edge, markeredgewidth=2
            )
            points = ((left, run["kl"], run["win_rate"]), (right, run["repeated_policy"], run["second_judge"]))
            for axis, x, y in points:  # labels alternate above and below: runs of one preset sit close together
                offset = (6, 5) if i % 2 == 0 else (6, -11)
                axis.annotate(run["name"], (x, y), textcoords="offset points", xytext=offset, fontsize=8)
        left.plot([], [], "o", color=colour, label=label)  # the legend's marker, without a run's flag edge
    reference = next(run for runs in groups.values() for run in runs)["repeated_reference"]
    right.axvline(reference, color="grey", linestyle="--", label="reference's repetition")
    right.axhline(0.70, color="grey", linestyle=":", label="second-judge threshold 0.70")
    left.axvline(5, color="grey", linestyle=":", label="KL threshold 5 nats")
    left.set(xlabel="KL(π‖π_ref), nats", ylabel="VADER win rate, greedy", title="The judge that made the pairs")
    right.set(
        xlabel="greedy answers repeating a 3-gram",
        ylabel="TextBlob win rate, greedy",
        title="Gaming detectors (red edge: flag raised)",
    )
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    scratch = output.with_suffix(".tmp.png")
    figure.savefig(scratch, dpi=110)
    scratch.replace(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", help="LABEL=RUN_DIR[,RUN_DIR…]: one group of runs per preset")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "main_job.png", help="the PNG")
    args = parser.parse_args()
    groups = {}
    for group in args.groups:
        label, _, dirs = group.partition("=")
        if not dirs:
            parser.error(f"{group!r}: expected LABEL=RUN_DIR[,RUN_DIR…]")
        groups[label] = [greedy_figures(Path(d)) for d in dirs.split(",")]
    chart(groups, args.output)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
