"""The ``dpo-recipes`` command (also ``python -m dpo_recipes``): train, inspect data, cross-check, evaluate, merge.

    dpo-recipes train --config tiny                               # DPO on the offline tiny preset
    dpo-recipes presets                                           # the presets (--config NAME) and their files
    dpo-recipes data doctor ultrafeedback_binarized --max-rows 500  # what a dataset really gives DPO
    dpo-recipes data convert hh_rlhf my-hh --to jsonl                # the recipe's output, with its drop account
    dpo-recipes crosscheck --config tiny                          # TRL's numbers vs the papers' equations
    dpo-recipes evaluate outputs/zephyr-tiny                        # win rate vs temperature, KL, implicit reward
    dpo-recipes pairs --output my-pairs --prompts prompts.txt       # on-policy pairs: k answers, judged, best vs worst
    dpo-recipes merge outputs/zephyr-tiny outputs/zephyr-tiny-merged  # standalone safetensors model

Each subcommand's --help lists its options.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from dpo_recipes.core.errors import UserError, debugging, yaml_problem
from dpo_recipes.crosscheck.check_data import CheckData
from dpo_recipes.data import FORMATS, RECIPES, get_recipe, load_preference_splits
from dpo_recipes.data.doctor import diagnose
from dpo_recipes.data.export import TARGETS
from dpo_recipes.data.registry import BAD_ROW_POLICIES
from dpo_recipes.evaluation import MAX_PAIRS
from dpo_recipes.training.presets import accelerate_configs, describe, presets, resolve_config


def _options(pairs: list[str]) -> dict:
    """``["rejected=worst", "min_score_ratio=2"]`` → {"rejected": "worst", "min_score_ratio": 2} (YAML scalars)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option expects key=value, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def _dataset_and_recipe(args) -> tuple[str, str]:
    """NAME_OR_PATH is a recipe name (its hub dataset) or a dataset (hub id, path, embedded name) + --recipe."""
    if args.recipe:
        get_recipe(args.recipe)
        return args.name_or_path, args.recipe
    if args.name_or_path in RECIPES:
        recipe = RECIPES[args.name_or_path]
        if recipe.hub_id is None:
            raise SystemExit(f"recipe {recipe.name!r} has no hub dataset: pass a path and --recipe {recipe.name}")
        return recipe.hub_id, recipe.name
    raise SystemExit(f"{args.name_or_path!r} is not a recipe name; pass --recipe, one of: {', '.join(sorted(RECIPES))}")


def data_list(args) -> None:
    width = max(map(len, RECIPES))
    for name in sorted(RECIPES):
        recipe = RECIPES[name]
        print(f"{name:<{width}}  {recipe.hub_id or '(local files)':<40}  {recipe.summary}")


def presets_list(args) -> None:
    """The recipe presets (``--config NAME``) and accelerate configs this installation ships, with their paths."""
    for title, found in (("Recipe presets (--config NAME)", presets()), ("Accelerate configs", accelerate_configs())):
        print(f"{title}:")
        width = max(map(len, found), default=0)
        for name, path in found.items():
            print(f"  {name:<{width}}  {describe(path)}\n  {'':<{width}}  {path}")


def data_preview(args) -> None:
    dataset, recipe = _dataset_and_recipe(args)
    split = args.split or get_recipe(recipe).splits[0]
    prepared = load_preference_splits(
        dataset,
        recipe,
        {"preview": split},
        max_rows={"preview": args.n},
        fmt=args.format,
        on_bad_row=args.on_bad_row,
        **_options(args.option),
    )["preview"]
    for index, row in enumerate(prepared.dataset.to_list()):
        print(f"--- row {index}")
        print(json.dumps(row, indent=2, ensure_ascii=False))
    print(prepared.describe(f"{dataset}[{split}]"))


def data_doctor(args) -> None:
    dataset, recipe = _dataset_and_recipe(args)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        from dpo_recipes.worlds import embedded

        tokenizer = AutoTokenizer.from_pretrained(embedded.resolve(args.tokenizer))
    report = diagnose(
        dataset,
        recipe,
        args.split,
        args.format,
        tokenizer,
        args.max_length,
        args.max_rows,
        on_bad_row=args.on_bad_row,
        **_options(args.option),
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.render())


def data_convert(args) -> None:
    from dpo_recipes.data.export import export_splits

    dataset, recipe = _dataset_and_recipe(args)
    splits = args.split or list(get_recipe(recipe).splits)
    account = export_splits(
        dataset,
        recipe,
        splits,
        args.output,
        to=args.to,
        fmt=args.format,
        on_bad_row=args.on_bad_row,
        max_rows=args.max_rows,
        overwrite=args.overwrite,
        allow_same_rows=args.allow_same_rows,
        **_options(args.option),
    )
    if "note" in account:
        print(f"Note: {account['note']}")
    for split, counts in account["splits"].items():
        reasons = ", ".join(f"{n} {reason}" for reason, n in counts["dropped"].items()) or "none"
        print(f"{split}: read {counts['rows_read']}, kept {counts['rows_kept']}, dropped: {reasons}")
    print(f"Wrote {args.output} ({args.to}; account.json beside the data)")


def crosscheck(args) -> None:
    from dpo_recipes.crosscheck import runner

    config, settings = {}, None
    if args.config:
        path = resolve_config(args.config)
        try:
            config = yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            raise yaml_problem(error, f"--config {path}") from error
        settings = [runner.setting_from_config(config)]
    given = {  # a flag, else the YAML's value, else the default of CheckData
        "model": args.model or config.get("model_name_or_path"),
        "dataset": args.dataset or config.get("dataset_name"),
        "recipe": args.recipe or config.get("dataset_recipe"),
        "split": args.split or config.get("dataset_test_split"),
        "n_pairs": args.pairs,
        "max_length": config.get("max_length"),
        "truncation_mode": config.get("truncation_mode"),
    }
    data = runner.CheckData(**{key: value for key, value in given.items() if value is not None})
    results = runner.crosscheck(args.loss_type, args.policy, data, settings=settings, dtype=args.dtype)
    extra = [] if args.skip_training_checks else runner.training_checks(args.policy, data, args.dtype)
    print(runner.render(results))
    coarse = [r.setting for r in results if not r.sensitive]
    if coarse:
        print(
            f"Not verified to 1% at {args.dtype} (the rounding of this precision is as large as a 1% error "
            f"there; run --dtype float32 to verify them): {'; '.join(coarse)}"
        )
    for row in extra:
        measured = f"{row.trl:.3g} (reference {row.reference:.7g}, bound {row.tolerance:g})"
        variant = f"; TRL-style value {row.variant:.3g}" if row.variant is not None else ""
        print(f"{row.verdict.upper():<9} {row.quantity}: {measured}{variant}")
    if any(row.verdict == "departure" for row in extra):
        print(f"Departure {runner.paths.ACCUMULATION_DEPARTURE}")
    if args.json:
        from dpo_recipes.core.files import atomic_write_text

        atomic_write_text(args.json, runner.to_json(results, extra))
    failed = [r.setting for r in results if not r.passed] + [row.quantity for row in extra if row.verdict == "MISMATCH"]
    if failed:
        raise SystemExit(f"crosscheck: unexplained differences in: {'; '.join(failed)}")


def evaluate(args) -> None:
    from dpo_recipes.evaluation.run_eval import evaluate_run

    temperatures = [float(t) for t in args.temperatures.split(",")]
    results = evaluate_run(
        args.run_dir,
        judge=args.judge,
        second_judge=args.second_judge,
        temperatures=temperatures,
        n_prompts=args.n_prompts,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        base_model=args.base_model,
        dataset=args.dataset,
        recipe=args.recipe,
        split=args.split,
        max_pairs=args.max_pairs,
    )
    for point in results["temperatures"]:
        low, high = point["ci95"]
        print(
            f"temperature {point['temperature']:<5g} win rate {point['win_rate']:.3f} [{low:.3f}, {high:.3f}]  "
            f"reward {point['mean_reward_policy']:+.3f} vs {point['mean_reward_reference']:+.3f}"
        )
    kl, implicit = results["kl"], results["implicit_reward"]
    print(
        f"KL(policy || reference) {kl['mean']:.3f} ± {kl['stderr']:.3f} nats; held-out implicit-reward "
        f"accuracy {implicit['accuracy']:.3f}, margin {implicit['margin']:.3f}"
    )
    print(f"Written: {args.run_dir}/evaluation.json, win_rate_vs_temperature.png, report.md")


def pairs(args) -> None:
    from dpo_recipes.core.runtime import configure_threads
    from dpo_recipes.worlds import embedded
    from dpo_recipes.worlds.pairs import PairSettings, write_pairs

    logging.getLogger().setLevel(logging.INFO)
    configure_threads(args.threads)
    settings = PairSettings(
        model=args.model,
        judge=args.judge,
        train_prompts=args.prompts,
        test_prompts=args.test_prompts,
        n_train=args.n_train,
        n_test=args.n_test,
        k=args.k,
        k_test=args.k_test,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        min_gap=args.min_gap,
        on_task_only=args.on_task_only,
        complete_only=args.complete_only,
        repetition_free_only=args.repetition_free_only,
        pairs_per_prompt=args.pairs_per_prompt,
        seed=args.seed,
        generation_dtype=args.generation_dtype,
    )
    report, reused = write_pairs(settings, args.output, location=embedded.resolve(args.model))
    for split, account in report["splits"].items():
        print(
            f"{split}: {account['prompts']} prompts → {account['pairs']} pairs, {account['ties']} ties, "
            f"{account['below_gap']} below --min-gap, {account.get('off_task', 0)} without 2 on-task answers; "
            f"{account['truncated']} of {account['samples']} answers "
            f"truncated; mean judge score {account['score_mean']:+.3f}"
        )
    print(
        f"{'Reused' if reused else 'Wrote'} {args.output} (key {report['key']}); train on it with "
        f"--dataset_name {args.output} --dataset_recipe ultrafeedback_binarized"
    )


def train(argv: list[str]) -> None:
    """``dpo-recipes train ...``: the Zephyr-style recipe's own TrlParser (every DPOConfig, ModelConfig and
    recipe option, YAML via --config), so the command and ``recipes/zephyr_style.py`` accept the same flags."""
    from dpo_recipes.training.train import run_from_command_line

    logging.getLogger().setLevel(logging.INFO)
    run_from_command_line(argv, prog="dpo-recipes train")


def reference_logps(argv: list[str]) -> None:
    """``dpo-recipes reference-logps ...``: the training parser's options (YAML via --config) plus --output_file."""
    from dpo_recipes.training.train import reference_logps_from_command_line

    logging.getLogger().setLevel(logging.INFO)
    reference_logps_from_command_line(argv, prog="dpo-recipes reference-logps")


def merge(args) -> None:
    from dpo_recipes.training.merging import merge_adapter

    logging.getLogger().setLevel(logging.INFO)
    result = merge_adapter(args.run_dir, args.output_dir, args.base_model, args.dtype, args.overwrite)
    print(f"Wrote {result['output_dir']}: the adapter of {args.run_dir} {result['how']}.")


def _dataset_arguments(parser: argparse.ArgumentParser, on_bad_row: str = "error", splits: str = "one") -> None:
    parser.add_argument("name_or_path", help="a recipe name (reads its hub dataset), or a hub id / path with --recipe")
    parser.add_argument("--recipe", help="the dataset recipe to read NAME_OR_PATH with (see `data list`)")
    if splits == "one":
        parser.add_argument("--split", help="raw split to read (default: the recipe's first split)")
    else:
        parser.add_argument("--split", action="append", help="a raw split to convert, repeatable (default: all)")
    parser.add_argument(
        "--on-bad-row",
        choices=BAD_ROW_POLICIES,
        default=on_bad_row,
        help=f"'error': stop at a malformed row, naming it; 'skip': leave it out, counted (default: {on_bad_row})",
    )
    parser.add_argument("--format", choices=FORMATS, default="conversational", help="TRL output format")
    parser.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE", help="a recipe option, e.g. rejected=worst"
    )


class Parser(argparse.ArgumentParser):
    """An argparse parser whose long options answer to both spellings, ``--on-bad-row`` and ``--on_bad_row``, as
    `train`'s flags do (transformers' HfArgumentParser accepts both): one flag, whichever way it is typed."""

    def add_argument(self, *names, **kwargs):
        spellings = [*names]
        for name in names:
            if name.startswith("--"):
                for other in (name[:2] + name[2:].replace("-", "_"), name[:2] + name[2:].replace("_", "-")):
                    if other not in spellings:
                        spellings.append(other)
        return super().add_argument(*spellings, **kwargs)


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dpo-recipes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "train",
        add_help=False,  # `dpo-recipes train --help` is the training parser's own, listing every option
        help="train a DPO policy: a recipe YAML (--config) and/or flags; `dpo-recipes train --help` lists all",
    )
    commands.add_parser(
        "reference-logps",
        add_help=False,  # its own parser: the training options plus --output_file
        help="compute a recipe's reference log-probs once into a checksummed file that every rank and later run "
        "reads (train --reference_logps FILE); `dpo-recipes reference-logps --help` lists all",
    )
    _add_data_commands(commands)
    commands.add_parser(
        "presets", help="the shipped recipe presets (train --config NAME) and accelerate configs, with their paths"
    ).set_defaults(func=presets_list)
    _add_crosscheck_command(commands)
    _add_pairs_command(commands)
    _add_evaluate_command(commands)
    _add_merge_command(commands)
    return parser


def _add_data_commands(commands) -> None:
    data = commands.add_parser("data", help="dataset recipes: list, preview, doctor, convert").add_subparsers(
        dest="data_command", required=True
    )
    data.add_parser("list", help="every dataset recipe, its hub dataset and what it does").set_defaults(func=data_list)

    preview = data.add_parser("preview", help="the first rows of a dataset in TRL's format")
    _dataset_arguments(preview)
    preview.add_argument("-n", type=int, default=3, help="how many raw rows to read")
    preview.set_defaults(func=data_preview)

    doctor = data.add_parser(
        "doctor", help="what the dataset will really give DPO: drops, duplicates, length, label leaks, tokens"
    )
    _dataset_arguments(doctor, on_bad_row="skip")
    doctor.add_argument("--tokenizer", help="tokenizer (hub id, path or embedded name) for the token-level checks")
    doctor.add_argument("--max-length", type=int, help="TRL's max_length, to count truncated and vanishing pairs")
    doctor.add_argument("--max-rows", type=int, help="read only the first N raw rows")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(func=data_doctor)

    convert = data.add_parser(
        "convert",
        help="write a recipe's output as a dataset (parquet, jsonl or save_to_disk) with its drop account",
        description="Convert splits of a raw dataset through its recipe and write them to OUTPUT in the hub's "
        "layout (data/{split}-00000-of-00001.parquet|jsonl; load_dataset(OUTPUT) reads them) or with "
        "save_to_disk (load_from_disk), with account.json beside them: rows read, kept and dropped (with reasons) "
        "per split. OUTPUT appears whole or not at all.",
    )
    _dataset_arguments(convert, splits="many")
    convert.add_argument("output", help="directory to write (new or empty, unless --overwrite)")
    convert.add_argument("--to", choices=TARGETS, default="parquet", help="file format")
    convert.add_argument("--max-rows", type=int, help="read only the first N raw rows of each split")
    convert.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    convert.add_argument(
        "--allow-same-rows",
        action="store_true",
        help="a single file stands for every split: write each anyway (labelled in account.json) instead of refusing",
    )
    convert.set_defaults(func=data_convert)


def _add_crosscheck_command(commands) -> None:
    check = commands.add_parser(
        "crosscheck",
        help="verify TRL's DPO numbers against a from-scratch implementation",
        description="Run TRL's DPOTrainer.compute_loss on a fixed batch and compare loss, log-probs, rewards, "
        "metrics and gradients with an independent implementation of each paper's loss. Known, documented "
        "departures of TRL from a paper are reported with both numbers; the exit status is non-zero only for "
        "unexplained differences.",
    )
    check.add_argument(
        "--loss-type",
        nargs="+",
        default=["all"],
        metavar="NAME",
        help="loss types to check, or 'all' (every loss type and every loss option)",
    )
    check.add_argument("--policy", choices=["full", "lora", "qlora"], default="lora", help="what is trained")
    check.add_argument(
        "--config", help="a recipe YAML or preset name: its model, dataset, recipe and loss settings are checked"
    )
    defaults = CheckData()
    check.add_argument("--model", help=f"model path, hub id or embedded name (default: {defaults.model})")
    check.add_argument("--dataset", help=f"dataset (default: {defaults.dataset})")
    check.add_argument("--recipe", help=f"dataset recipe (default: {defaults.recipe})")
    check.add_argument("--split", help=f"split the fixed batch is taken from (default: {defaults.split})")
    check.add_argument("--pairs", type=int, help=f"preference pairs in the fixed batch (default: {defaults.n_pairs})")
    check.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="compute dtype of the model (every bound is derived from the computation at that precision: see "
        "dpo_recipes/crosscheck/tolerances.py)",
    )
    check.add_argument("--json", help="also write the results as JSON to this path")
    check.add_argument(
        "--skip-training-checks",
        action="store_true",
        help="skip the checks of batch construction, ties, evaluate() and gradient accumulation",
    )
    check.set_defaults(func=crosscheck)


def _add_pairs_command(commands) -> None:
    make = commands.add_parser(
        "pairs",
        help="on-policy preference pairs: sample k answers per prompt, judge them, keep best vs worst",
        description="Sample K answers per prompt from MODEL, score each with JUDGE, and write the best against "
        "the worst as a dataset in the ultrafeedback_binarized schema (train_prefs/test_prefs parquet files and "
        "pairs.json with the settings and counts), moved into place whole. Rerunning with the same settings "
        "reuses the directory. Ties are written and dropped (counted) by the recipe.",
    )
    make.add_argument("--output", required=True, help="directory to write (a new one, or one these settings made)")
    make.add_argument(
        "--model",
        default="dpo-recipes/smollm2-135m-instruct",
        help="the model that answers (hub id, local path or embedded name)",
    )
    make.add_argument("--judge", default="vader", help="vader, toy-world, or reward-model:PATH_OR_ID")
    make.add_argument(
        "--prompts",
        default="builtin:reviews",
        help="training prompts: a .txt file (one per line), a .jsonl file with a 'prompt' field, or "
        "builtin:reviews (one-sentence review requests)",
    )
    make.add_argument("--test-prompts", help="held-out prompts, as --prompts (builtin: prompts about other things)")
    make.add_argument("--n-train", type=int, default=128, help="training prompts to use (a seeded sample)")
    make.add_argument("--n-test", type=int, default=96, help="held-out prompts to use (a seeded sample)")
    make.add_argument("--k", type=int, default=4, help="answers sampled per training prompt")
    make.add_argument("--k-test", type=int, default=2, help="answers sampled per held-out prompt")
    make.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    make.add_argument("--max-new-tokens", type=int, default=48, help="length limit of each answer")
    make.add_argument(
        "--min-gap",
        type=float,
        default=0.0,
        help="training pairs: keep a pair only if best − worst exceeds this (others: counted, not written)",
    )
    make.add_argument(
        "--on-task-only",
        action="store_true",
        help="built-in review prompts: choose best and worst among the answers that review the thing asked about "
        "(prompts without two such answers: counted, not written)",
    )
    make.add_argument(
        "--complete-only",
        action="store_true",
        help="choose best and worst among the answers that ended before --max-new-tokens (others are often loops)",
    )
    make.add_argument(
        "--repetition-free-only",
        action="store_true",
        help="choose best and worst among the answers that repeat no word 3-gram (a DPO + SFT loss then never "
        "imitates a loop)",
    )
    make.add_argument(
        "--pairs-per-prompt",
        type=int,
        default=1,
        help="training prompts: up to this many disjoint pairs per prompt from its answers ranked by score (best "
        "against worst, second best against second worst, …; each held to --min-gap); at most --k // 2",
    )
    make.add_argument("--seed", type=int, default=0, help="sampling and prompt-sampling seed")
    make.add_argument(
        "--generation-dtype",
        choices=["auto", "float32", "bfloat16"],
        default="auto",
        help="precision a float32 model samples in on a CPU (auto: bfloat16 where the CPU multiplies it natively, "
        "~2.5x faster; another precision draws other answers, so pin one to rebuild the same pairs anywhere)",
    )
    make.add_argument("--threads", type=int, help="torch CPU threads (default: every core this process may use)")
    make.set_defaults(func=pairs)


def _add_evaluate_command(commands) -> None:
    run = commands.add_parser(
        "evaluate",
        help="win rate across temperatures, KL to the reference, held-out implicit reward of a trained run",
    )
    run.add_argument("run_dir", help="a run's output directory (adapter + metrics.json, or a full model)")
    run.add_argument("--judge", help="toy-world, vader, or reward-model:PATH_OR_ID (default: the run's judge)")
    run.add_argument(
        "--second-judge",
        help="a judge that did not make the pairs, for the quality section (default: textblob for vader, vader "
        "for textblob, none otherwise; '' for none)",
    )
    run.add_argument("--temperatures", default="0,0.25,0.5,0.75,1.0", help="comma-separated sampling temperatures")
    run.add_argument("--n-prompts", type=int, default=100, help="held-out prompts answered by both models")
    run.add_argument("--max-new-tokens", type=int, default=48, help="length limit of each answer")
    run.add_argument("--seed", type=int, default=0, help="sampling seed")
    run.add_argument("--base-model", help="the reference model (default: the run's model in metrics.json)")
    run.add_argument("--dataset", help="held-out data (default: the run's dataset)")
    run.add_argument("--recipe", help="its dataset recipe (default: the run's recipe)")
    run.add_argument("--split", help="its held-out split (default: the run's test split)")
    run.add_argument(
        "--max-pairs",
        type=int,
        default=MAX_PAIRS,
        help=f"read only the first N raw held-out rows (default {MAX_PAIRS}; truncated to the run's max_length)",
    )
    run.set_defaults(func=evaluate)


def _add_merge_command(commands) -> None:
    fuse = commands.add_parser(
        "merge",
        help="merge a run's LoRA/QLoRA adapter into its base and save a standalone model (safetensors)",
        description="Merge the adapter of RUN_DIR into its base model with peft and save the result with its "
        "tokenizer. A QLoRA adapter is merged into a de-quantized copy of the 4-bit base it was trained on.",
    )
    fuse.add_argument("run_dir", help="a run's output directory (or any peft adapter directory)")
    fuse.add_argument("output_dir", help="where the merged model goes (written whole, then moved into place)")
    fuse.add_argument(
        "--base-model",
        help="the base model (default: the run's model in metrics.json, else the "
        "adapter config's base_model_name_or_path)",
    )
    fuse.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="dtype of the merged weights"
    )
    fuse.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it exists")
    fuse.set_defaults(func=merge)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    debug, argv = debugging(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["train"]:
            return train(argv[1:])
        if argv[:1] == ["reference-logps"]:
            return reference_logps(argv[1:])
        args = make_parser().parse_args(argv)
        args.func(args)
    except UserError as error:  # the user's to fix: one line; anything else is a bug and keeps its traceback
        if debug:
            raise
        raise SystemExit(f"dpo-recipes: error: {error}") from error


if __name__ == "__main__":
    sys.exit(main())
