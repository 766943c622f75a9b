"""β sweep: the DPO paper's two figures in miniature, offline: the reward–KL frontier and win rate vs temperature.

Trains one Zephyr-style run per β (checkpoints along the way), then measures every checkpoint's samples at
temperature 1 (ground-truth reward and KL to the reference) and each final policy's win rate at several
temperatures. The reference and best-of-n sampling from it are the non-DPO comparison on the same plot.

    python recipes/beta_sweep.py                      # tiny preset, β = 0.1, 0.3, 1, 3, learning rate 2e-4
    python recipes/beta_sweep.py --config recipes/zephyr_style/smollm2.yaml --learning_rate 5e-4 \
        --betas 0.1,0.5 --checkpoints 2 --n_prompts 64 --best_of 2,4 --temperatures 0,1   # the real model
    python recipes/beta_sweep.py --betas 0.05,0.5 -- --num_train_epochs 2   # flags after -- go to every run

Writes, in --output_dir: one run directory per β, frontier.png, win_rate_vs_temperature.png, sweep.json and
report.md.
"""

import argparse
import json
import logging
import math
import time
from pathlib import Path

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from dpo_recipes.core.files import atomic_write_text
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.data import load_preference_splits
from dpo_recipes.evaluation.comparison import unique_prompts
from dpo_recipes.evaluation.run_eval import (
    best_of_n_point,
    evaluate_run,
    frontier_point,
    plot_frontier,
    plot_win_rate_vs_temperature,
)
from dpo_recipes.training.presets import resolve_config
from dpo_recipes.training.train import load_splits, make_parser
from dpo_recipes.training.train import main as train_run
from dpo_recipes.worlds import embedded
from dpo_recipes.worlds.judges import get_judge


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--config",
        default="tiny",
        type=resolve_config,
        help="the recipe preset each run uses (a YAML or a preset name)",
    )
    parser.add_argument("--betas", default="0.1,0.3,1,3", help="comma-separated β values, one run each")
    parser.add_argument(
        "--learning_rate",
        type=float,
        default=2e-4,
        help="learning rate of every run: 10x below the tiny preset's, so that within one epoch no run reaches "
        "the KL where its samples collapse and the frontier shows how β trades reward for KL",
    )
    parser.add_argument("--output_dir", default="outputs/beta-sweep", help="where runs, plots and report go")
    parser.add_argument("--checkpoints", type=int, default=4, help="frontier points per run (evenly spaced)")
    parser.add_argument("--n_prompts", type=int, default=100, help="held-out prompts per measurement")
    parser.add_argument("--best_of", default="2,4,8,16", help="n values of the best-of-n comparison")
    parser.add_argument("--temperatures", default="0,0.25,0.5,0.75,1.0", help="temperatures of the win-rate curves")
    parser.add_argument("--max_new_tokens", type=int, default=48, help="length limit of every sample")
    parser.add_argument("--judge", help="the ground-truth judge (default: the preset's judge, else toy-world)")
    parser.add_argument("recipe_flags", nargs="*", help="extra flags for every run, after --, e.g. -- --max_steps 40")
    return parser.parse_args(argv)


def train(config: str, beta: float, output_dir: Path, checkpoints: int, extra: list[str]) -> dict:
    parser = make_parser()
    script_args, training_args, _ = parser.parse_args_and_config(["--config", config, *extra])
    steps = training_args.max_steps
    if steps <= 0:  # the real optimizer steps of the run, so checkpoints are spread over all of it
        pairs = len(load_splits(script_args, training_args.seed)["train"].dataset)
        per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        steps = math.ceil(pairs / per_step) * math.ceil(training_args.num_train_epochs)
    saving = [
        "--save_strategy",
        "steps",
        "--save_steps",
        str(max(1, steps // checkpoints)),
        "--save_total_limit",
        str(checkpoints + 2),
    ]
    args = [
        "--config",
        config,
        "--beta",
        str(beta),
        "--output_dir",
        str(output_dir),
        "--crosscheck",
        "false",
        *saving,
        *extra,
    ]
    return train_run(*parser.parse_args_and_config(args))


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def main(args: argparse.Namespace) -> dict:
    started, out = time.time(), Path(args.output_dir)
    betas = [float(b) for b in args.betas.split(",")]
    flags = ["--learning_rate", str(args.learning_rate), *args.recipe_flags]  # later flags win
    runs = {beta: train(args.config, beta, out / f"beta-{beta:g}", args.checkpoints, flags) for beta in betas}
    info = RunRecord.from_json(next(iter(runs.values()))["run"])
    tokenizer = AutoTokenizer.from_pretrained(embedded.resolve(info.model))
    test = load_preference_splits(info.dataset, info.dataset_recipe, {"test": info.test_split})["test"]
    args.judge = args.judge or info.judge or "toy-world"
    prompts, judge = unique_prompts(test.dataset, args.n_prompts), get_judge(args.judge)

    def base():
        return AutoModelForCausalLM.from_pretrained(embedded.resolve(info.model)).eval()

    frontier = {}
    for beta in betas:
        points = []
        for checkpoint in checkpoint_dirs(out / f"beta-{beta:g}"):
            model = PeftModel.from_pretrained(base(), checkpoint).eval()
            points.append(
                {
                    "step": int(checkpoint.name.split("-")[1]),
                    **frontier_point(model, tokenizer, prompts, judge, None, args.max_new_tokens),
                }
            )
        frontier[f"β = {beta:g}"] = points
    reference = frontier_point(base(), tokenizer, prompts, judge, base(), args.max_new_tokens)
    best_of = [
        best_of_n_point(base(), tokenizer, prompts, judge, int(n), args.max_new_tokens) for n in args.best_of.split(",")
    ]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    win_rates = {
        f"β = {beta:g}": evaluate_run(
            out / f"beta-{beta:g}",
            judge=args.judge,
            temperatures=temperatures,
            n_prompts=args.n_prompts,
            max_new_tokens=args.max_new_tokens,
        )
        for beta in betas
    }
    plot_frontier(frontier, reference, best_of, out / "frontier.png")
    plot_win_rate_vs_temperature(win_rates, out / "win_rate_vs_temperature.png")
    sweep = {
        "frontier": frontier,
        "reference": reference,
        "best_of_n": best_of,
        "win_rates": {k: v["temperatures"] for k, v in win_rates.items()},
        "kl_final": {k: v["kl"] for k, v in win_rates.items()},
        "quality": {k: v["quality"] for k, v in win_rates.items()},
        "wall_time_s": time.time() - started,
    }
    atomic_write_text(out / "sweep.json", json.dumps(sweep, indent=2) + "\n")
    atomic_write_text(out / "report.md", report(sweep))
    print(f"\nβ sweep done in {sweep['wall_time_s']:.0f} s: {out}/frontier.png, win_rate_vs_temperature.png, report.md")
    return sweep


def report(sweep: dict) -> str:
    lines = [
        "# β sweep: reward–KL frontier and win rate vs temperature",
        "",
        "| run | step | KL (nats) | ground-truth reward |",
        "|---|---|---|---|",
    ]
    for label, points in sweep["frontier"].items():
        lines += [
            f"| {label} | {p['step']} | {p['kl']:.2f} ± {p['kl_stderr']:.2f} | {p['reward']:+.3f} ± "
            f"{p['reward_stderr']:.3f} |"
            for p in points
        ]
    ref = sweep["reference"]
    lines.append(f"| reference (SFT) | – | {ref['kl']:.2f} ± {ref['kl_stderr']:.2f} | {ref['reward']:+.3f} |")
    lines += [
        f"| best-of-{p['n']} from the reference | – | {p['kl']:.2f} | {p['reward']:+.3f} |" for p in sweep["best_of_n"]
    ]
    temperatures = [p["temperature"] for p in next(iter(sweep["win_rates"].values()))]
    header = "| run | " + " | ".join(f"T = {t:g}" for t in temperatures) + " |"
    lines += ["", "Win rate against the reference (ties ½):", "", header, "|---" * (len(temperatures) + 1) + "|"]
    for label, points in sweep["win_rates"].items():
        lines.append(f"| {label} | " + " | ".join(f"{p['win_rate']:.2f}" for p in points) + " |")
    lines += ["", "Judge gaming (the quality section of each run's evaluation.json):", ""]
    for label, quality in sweep["quality"].items():
        verdict = "suspected: " + "; ".join(quality["reasons"]) if quality["gaming_suspected"] else "not suspected"
        lines.append(f"- {label}: {verdict}")
    lines += ["", "![frontier](frontier.png)", "", "![win rate vs temperature](win_rate_vs_temperature.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(parse_args())
