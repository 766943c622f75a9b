"""Training: a raw preference dataset through its recipe into TRL's DPOTrainer, then the run's outputs.

``RecipeArguments`` (this project's options, `arguments`) sit beside TRL's ``DPOConfig`` and ``ModelConfig`` in one
``TrlParser``, so every YAML key is a flag and flags override the YAML. ``main`` is what both
``recipes/zephyr_style.py`` and ``dpo-recipes train`` run. The output directory receives the adapter (or
model), TRL's logs (trainer_state.json), metrics.json, training_curves.png, report.md and the model card
(README.md).
"""

import contextlib
import dataclasses
import logging
import os
import sys
import time

import torch
from transformers.integrations import TensorBoardCallback
from trl import DPOConfig, ModelConfig, TrlParser

from dpo_recipes.core import trl_internals
from dpo_recipes.core.errors import UserError, debugging
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.core.runtime import close_process_group, configure_threads, finish_collectives, stop_with_launcher
from dpo_recipes.crosscheck.runner import crosscheck_in_subprocess, setting_from_config
from dpo_recipes.data import load_preference_splits
from dpo_recipes.data.mixing import mix
from dpo_recipes.evaluation.comparison import compare_across_temperatures, unique_prompts
from dpo_recipes.evaluation.reporting import plot_training_curves, summary_paragraph, write_metrics, write_report
from dpo_recipes.trainer.build import build_dpo_trainer, policy_kind
from dpo_recipes.trainer.reference_logps import read_reference_logps, save_reference_logps, trainer_splits
from dpo_recipes.training.arguments import RecipeArguments, ReferenceFileArguments, with_device_precision
from dpo_recipes.training.model_card import write_model_card
from dpo_recipes.training.monitoring import LikelihoodDisplacementMonitor
from dpo_recipes.training.preflight import check_data, check_run, evaluates_on_train_rows, recipe_options
from dpo_recipes.training.presets import with_preset_configs
from dpo_recipes.training.reference_guard import check_reference
from dpo_recipes.training.retired_options import check_removed, ignored_warnings
from dpo_recipes.training.run_directory import checkpoint_to_resume, output_dir_lock, save_final_model
from dpo_recipes.training.sharing import make_adapter_config_portable, push_folder
from dpo_recipes.worlds.judges import get_judge, second_judge_name

logger = logging.getLogger(__name__)


def load_splits(script_args: RecipeArguments, seed: int, num_proc: int | None = None) -> dict:
    """The train/test splits in TRL's format: one dataset through its recipe, or a mixture of several;
    ``num_proc`` (TRL's ``dataset_num_proc``) worker processes for large splits, default every available core."""
    if script_args.dataset_mixture:
        return mix(script_args.dataset_mixture, script_args.dataset_format, seed, script_args.on_bad_row)
    return load_preference_splits(
        script_args.dataset_name,
        script_args.dataset_recipe,
        {"train": script_args.dataset_train_split, "test": script_args.dataset_test_split},
        dataset_config=script_args.dataset_config,
        data_dir=script_args.dataset_data_dir,
        max_rows={"train": script_args.max_train_samples, "test": script_args.max_eval_samples},
        fmt=script_args.dataset_format,
        on_bad_row=script_args.on_bad_row,
        streaming=script_args.dataset_streaming,
        num_proc=num_proc,
        **recipe_options(script_args),
    )


def count_trl_drops(splits: dict, given: dict, trainer) -> None:
    """TRL drops, without a word, pairs whose prompt leaves no room for a completion within max_length; count
    them in the split's account so no report says "dropped 0" over fewer pairs than it read."""
    for role, data in (("train", trainer.train_dataset), ("test", trainer.eval_dataset)):
        if hasattr(given[role], "__len__") and hasattr(data, "__len__") and len(data) < len(given[role]):
            splits[role].dropped["prompt fills max_length (dropped by TRL)"] += len(given[role]) - len(data)


def name_run(script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    """A run name that says what ran (model, data, loss, β, policy), unless one was given."""
    if training_args.run_name in (None, "", training_args.output_dir):
        data = "mixture" if script_args.dataset_mixture else script_args.dataset_name
        names = [part.rstrip("/").split("/")[-1] for part in (model_args.model_name_or_path, data)]
        loss = "+".join(training_args.loss_type)
        training_args.run_name = "-".join([*names, loss, f"beta{training_args.beta:g}", policy_kind(model_args)])


def name_tensorboard_dir(trainer, training_args: DPOConfig) -> None:
    """TensorBoard's events go to ``<output_dir>/runs/<run name>`` instead of a date-and-hostname folder
    (unless TENSORBOARD_LOGGING_DIR says otherwise)."""
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback) and callback.logging_dir is None:
            callback.logging_dir = os.path.join(training_args.output_dir, "runs", training_args.run_name)


@contextlib.contextmanager
def timed(phases: dict, name: str):
    """Record the wall time of the block as ``phases[name]`` (seconds): metrics.json's ``wall_time_s``."""
    started = time.time()
    yield
    phases[name] = time.time() - started


def weights_fingerprint(model) -> list[float]:
    """A float64 sum of squares per trainable tensor: cheap to keep (one number each, even for a full
    fine-tune), and it moves with any optimizer step that changes a weight."""
    with torch.no_grad():
        return [float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.requires_grad]


def main(script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig) -> dict:
    for warning in ignored_warnings(training_args):
        logger.warning(warning)
    name_run(script_args, training_args, model_args)
    tokenizer = check_run(script_args, training_args, model_args)  # seconds, before any weights or data load
    with output_dir_lock(training_args.output_dir):
        metrics = run(script_args, training_args, model_args, tokenizer)
    close_process_group()
    return metrics


def run(script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig, tokenizer=None) -> dict:
    """Data → trainer → training → outputs (``main`` checks the settings and locks the output directory)."""
    started, phases = time.time(), {}
    threads = configure_threads(script_args.torch_threads)
    resume = checkpoint_to_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    with timed(phases, "data"):  # the recipe, and on first use the embedded pairs (sampling and judging)
        splits = load_splits(script_args, training_args.seed, training_args.dataset_num_proc)
        check_data(splits, tokenizer, script_args.on_bad_row, script_args.escape_special_tokens)
    with timed(phases, "trainer"):  # the model, the tokenized data and the reference log-probs
        trainer = build_trainer(script_args, training_args, model_args, splits, tokenizer)
    monitor = LikelihoodDisplacementMonitor(training_args.beta)
    trainer.add_callback(monitor)
    guard = {"skipped": "resumed from a checkpoint: the policy has already moved"}
    if resume is None:
        with timed(phases, "reference_guard"):
            guard = check_reference(trainer, reference_file=script_args.reference_logps)
        logger.info(
            "Reference guard passed (%s): on %d sequences of the first batch |log π − log π_ref| ≤ %.2g nats",
            guard["form"],
            guard["sequences"],
            guard["max_abs_logp_difference"],
        )

    logger.info("Held-out evaluation before training (policy = reference)")
    with timed(phases, "eval_before"):
        eval_before = trl_internals.evaluate_before_training(trainer)
    fingerprint = weights_fingerprint(trainer.model)
    with timed(phases, "train"):
        train_result = trainer.train(resume_from_checkpoint=resume)
    weights_changed = weights_fingerprint(trainer.model) != fingerprint
    if not weights_changed:
        logger.error(
            "Training changed no trainable weight in %d steps: the run's results are those of the "
            "starting policy (known case: a 4-bit QLoRA model on CPU evaluated before training, where "
            "bitsandbytes' CPU kernels then pass no gradient)",
            trainer.state.global_step,
        )
    save_final_model(trainer, training_args.output_dir)
    logger.info("Held-out evaluation after training")
    with timed(phases, "eval_after"):
        eval_after = trainer.evaluate()
    finish_collectives(trainer.accelerator)  # the last collective is behind us; the rest is the main process's
    if not trainer.accelerator.is_main_process:
        return {}

    with timed(phases, "win_rate"):  # generation and judging, policy and reference
        win_rate, comparisons = measure_win_rate(script_args, training_args.seed, trainer, splits["test"].dataset)
    metrics = {
        "run": RunRecord.from_args(script_args, training_args, model_args).to_json(),
        "data": {role: split.describe(role) for role, split in splits.items()},
        "eval_pairs": len(trainer.eval_dataset),
        "eval_before": eval_before,
        "eval_after": eval_after,
        "train": {"global_step": trainer.state.global_step, "weights_changed": weights_changed, **train_result.metrics},
        "win_rate": win_rate,
        "likelihood_displacement": monitor.summary(),
        "reference_guard": guard,
        "torch_threads": threads,
        "wall_time_s": phases,
    }
    phases["total"] = time.time() - started  # up to here; the outputs (cross-check, card) follow
    outputs_started = time.time()
    write_outputs(metrics, comparisons, trainer.state.log_history, monitor, script_args, training_args, model_args)
    spent = ", ".join(f"{name} {seconds:.0f}" for name, seconds in phases.items())
    logger.info("Wall time (s): %s; outputs, cross-check and card %.0f", spent, time.time() - outputs_started)
    return metrics


def build_trainer(
    script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig, splits: dict, tokenizer=None
):
    """The DPOTrainer of a run; the first ``eval_pairs`` test pairs are TRL's held-out set. Pairs TRL drops are
    counted in their split's account. With a ``chat_template`` setting the trainer gets the preflight's
    ``tokenizer``, which carries it."""
    train, test = splits["train"].dataset, splits["test"].dataset
    scored = test.select(range(min(script_args.eval_pairs, len(test)))) if script_args.eval_pairs else test
    trainer = build_dpo_trainer(
        model_args,
        training_args,
        train,
        scored,
        pack_sequences=script_args.pack_sequences,
        max_tokens_per_batch=script_args.max_tokens_per_batch,
        reference_logps=script_args.reference_logps,
        **({"processing_class": tokenizer} if script_args.chat_template and tokenizer is not None else {}),
    )
    count_trl_drops(splits, {"train": train, "test": scored}, trainer)
    if evaluates_on_train_rows(script_args):
        splits["test"].note = "NOT held out: the same rows as the train split (allow_eval_on_train)"
    name_tensorboard_dir(trainer, training_args)
    return trainer


def measure_win_rate(script_args: RecipeArguments, seed: int, trainer, test) -> tuple[dict, dict]:
    """(win-rate results, {temperature: Comparison}) of the trained policy against its reference, judged on
    held-out prompts; skipped without a judge."""
    if not script_args.judge:
        return {"skipped": "no judge configured (set --judge)"}, {}
    second = second_judge_name(script_args.judge, script_args.second_judge)
    measured, comparisons = compare_across_temperatures(
        trainer.accelerator.unwrap_model(trainer.model),
        trainer.processing_class,
        unique_prompts(test, script_args.win_rate_prompts),
        get_judge(script_args.judge),
        ref_model=trainer.ref_model,
        temperatures=sorted(set(script_args.win_rate_temperatures)),
        max_new_tokens=script_args.max_new_tokens,
        seed=seed,
        second_judge=(second, get_judge(second)) if second else None,
    )
    return {"judge": script_args.judge, **measured["temperatures"][0], **measured}, comparisons


def write_outputs(
    metrics: dict,
    comparisons: dict,
    log_history: list,
    monitor,
    script_args: RecipeArguments,
    training_args: DPOConfig,
    model_args: ModelConfig,
) -> None:
    """metrics.json, the plots, report.md, the cross-check verdict and the model card, into the output dir."""
    output_dir = training_args.output_dir
    write_metrics(f"{output_dir}/metrics.json", metrics)
    plot_training_curves(log_history, f"{output_dir}/training_curves.png")
    monitor.plot(f"{output_dir}/likelihood_displacement.png")
    write_report(f"{output_dir}/report.md", metrics, comparisons)
    verdict = {"skipped": "--crosscheck false"}
    if script_args.crosscheck:
        setting = setting_from_config(training_args.to_dict())
        lengths = {"max_length": training_args.max_length, "truncation_mode": training_args.truncation_mode}
        verdict = crosscheck_in_subprocess(setting, policy_kind(model_args), f"{output_dir}/crosscheck.json", **lengths)
    make_adapter_config_portable(output_dir, model_args.model_name_or_path)
    write_model_card(output_dir, metrics, script_args, training_args, model_args, verdict)
    if training_args.push_to_hub:  # once, now that the folder is final (the trainer itself never pushes)
        push_folder(output_dir, training_args)
    print("\n" + summary_paragraph(metrics, output_dir))


DESCRIPTION = """Train a DPO policy with TRL from a raw preference dataset (see `dpo-recipes data list`).
--config loads a recipe YAML: a path, or a shipped preset's name (tiny, smollm2, qlora, qlora_colab, full; see
`dpo-recipes presets`); every YAML key is also a flag below, and flags given here override the YAML. Without
bf16/fp16 the device chooses (bf16, fp16 on a GPU without bf16, float32 on a CPU); --debug shows the traceback of
an error. The options are this project's (dataset recipe, judge, cross-check), then TRL's DPOConfig (training and
loss) and ModelConfig (model, LoRA, 4-bit)."""


def make_parser(**kwargs) -> TrlParser:
    return TrlParser((RecipeArguments, DPOConfig, ModelConfig), description=DESCRIPTION, **kwargs)


def write_reference_logps(
    script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig, output_file: str
) -> dict[str, str]:
    """Compute a recipe's reference log-probs once (TRL's precompute) and write them to ``output_file`` for runs
    with ``reference_logps`` to read; the file's key (what the numbers depend on) is returned."""
    configure_threads(script_args.torch_threads)
    tokenizer = check_run(script_args, training_args, model_args)
    splits = load_splits(script_args, training_args.seed, training_args.dataset_num_proc)
    check_data(splits, tokenizer, script_args.on_bad_row, script_args.escape_special_tokens)
    script_args = dataclasses.replace(script_args, reference_logps=None)
    config = trl_internals.trainer_config(training_args, precompute_ref_log_probs=True)
    trainer = build_trainer(script_args, config, model_args, splits, tokenizer)
    finish_collectives(trainer.accelerator)  # the precompute gathered every rank's share; writing is rank 0's
    key = {}
    if trainer.accelerator.is_main_process:
        save_reference_logps(trainer, output_file)
        key = read_reference_logps(output_file)[1]
        counts = {name: len(data) for name, data in trainer_splits(trainer).items()}
        logger.info("Wrote the reference log-probs of %s to %s; key: %s", counts, output_file, key)
    close_process_group()
    return key


def reference_logps_from_command_line(argv: list[str] | None = None, prog: str | None = None) -> dict[str, str]:
    """``dpo-recipes reference-logps``: the training parser's options plus --output_file."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = TrlParser(
        (RecipeArguments, DPOConfig, ModelConfig, ReferenceFileArguments),
        description="Compute a recipe's reference log-probs once and write them to a checksummed file that "
        "every rank, later run and machine reads with --reference_logps. " + DESCRIPTION,
        **({"prog": prog} if prog else {}),
    )
    debug, argv = debugging(sys.argv[1:] if argv is None else argv)
    try:
        argv = with_device_precision(with_preset_configs(argv))
        check_removed(argv)
        script_args, training_args, model_args, output = parser.parse_args_and_config(argv)
        return write_reference_logps(script_args, training_args, model_args, output.output_file)
    except UserError as error:
        if debug:
            raise
        raise SystemExit(f"{parser.prog}: error: {error}") from error


def run_from_command_line(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Parse flags (and --config), train; a bad dataset, model or setting ends in one line naming it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_with_launcher()
    parser = make_parser(prog=prog) if prog else make_parser()
    debug, argv = debugging(sys.argv[1:] if argv is None else argv)
    try:
        argv = with_device_precision(with_preset_configs(argv))
        check_removed(argv)
        return main(*parser.parse_args_and_config(argv))
    except UserError as error:  # the user's to fix: one line (--debug for the traceback); a bug keeps its own
        if debug:
            raise
        raise SystemExit(f"{parser.prog}: error: {error}") from error
