"""Training: a raw preference dataset through its recipe into TRL's DPOTrainer, then the run's outputs.

``RecipeArguments`` (this project's options) sit beside TRL's ``DPOConfig`` and ``ModelConfig`` in one
``TrlParser``, so every YAML key is a flag and flags override the YAML. ``main`` is what both
``recipes/zephyr_style.py`` and ``dpo-recipes train`` run. The output directory receives the adapter (or
model), TRL's logs (trainer_state.json), metrics.json, training_curves.png, report.md and the model card
(README.md).
"""

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers.integrations import TensorBoardCallback
from trl import DPOConfig, ModelConfig, ScriptArguments, TrlParser

from dpo_recipes.core import trl_internals
from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_path, follow_umask
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.core.runtime import close_process_group, configure_threads, finish_collectives, stop_with_launcher
from dpo_recipes.crosscheck.runner import crosscheck_in_subprocess, setting_from_config
from dpo_recipes.data import RecipeError, load_preference_splits
from dpo_recipes.data.mixing import mix
from dpo_recipes.evaluation.comparison import compare_across_temperatures, unique_prompts
from dpo_recipes.evaluation.reporting import plot_training_curves, summary_paragraph, write_metrics, write_report
from dpo_recipes.trainer.build import build_dpo_trainer, policy_kind
from dpo_recipes.trainer.reference_logps import read_reference_logps, save_reference_logps, trainer_splits
from dpo_recipes.training.model_card import write_model_card
from dpo_recipes.training.monitoring import LikelihoodDisplacementMonitor
from dpo_recipes.training.preflight import check_data, check_run, evaluates_on_train_rows, recipe_options
from dpo_recipes.training.retired_options import check_removed, ignored_warnings
from dpo_recipes.worlds.judges import get_judge

logger = logging.getLogger(__name__)


@dataclass
class RecipeArguments(ScriptArguments):
    dataset_name: str = field(
        default="HuggingFaceH4/ultrafeedback_binarized",
        metadata={"help": "Hub id, local path, or an embedded name such as 'dpo-recipes/toy-world'."},
    )
    dataset_train_split: str = field(default="train_prefs", metadata={"help": "Raw split to train on."})
    dataset_test_split: str = field(default="test_prefs", metadata={"help": "Raw held-out split to evaluate on."})
    dataset_recipe: str = field(
        default="ultrafeedback_binarized",
        metadata={"help": "Registered dataset recipe that turns raw rows into TRL's prompt/chosen/rejected."},
    )
    dataset_recipe_options: dict | str | None = field(
        default=None,
        metadata={"help": 'Options of the recipe, a YAML mapping or JSON string, e.g. \'{"rejected": "worst"}\'.'},
    )
    dataset_format: str = field(
        default="conversational",
        metadata={
            "help": "TRL format the recipe emits: 'conversational' (message lists, the default), 'standard' (strings; "
            "a lone user turn stays a bare string, longer prompts become an HH-style transcript) or 'transcript' "
            "(strings, every prompt a transcript: one prompt format for data that mixes single and multi-turn rows)."
        },
    )
    dataset_data_dir: str | None = field(default=None, metadata={"help": "data_dir of the dataset (HH subsets)."})
    dataset_mixture: list[dict] | None = field(
        default=None,
        metadata={
            "help": "YAML list of {dataset, recipe, fraction, train_split, test_split, options}; replaces "
            "dataset_name (see dpo_recipes.data.mixing)."
        },
    )
    on_bad_row: str = field(
        default="error",
        metadata={"help": "'error': stop at a malformed row, naming it; 'skip': drop it and count it in the report."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Read only the first N raw train rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Read only the first N raw test rows."})
    judge: str | None = field(
        default=None,
        metadata={"help": "Judge scoring policy vs reference answers for the win rate ('toy-world'); unset: skip."},
    )
    win_rate_prompts: int = field(default=100, metadata={"help": "Held-out prompts answered by both models."})
    eval_pairs: int | None = field(
        default=None,
        metadata={
            "help": "Held-out pairs TRL's evaluate() scores before and after training (the first N of the "
            "test split; default: all). The win rate still takes its prompts from the whole test split."
        },
    )
    win_rate_temperatures: list[float] = field(
        default_factory=lambda: [0.0],
        metadata={
            "help": "Temperatures at which both models answer (0 = greedy); KL(π‖π_ref) is measured on the "
            "policy's samples at temperature 1."
        },
    )
    escape_special_tokens: bool = field(
        default=False,
        metadata={
            "help": "Keep pairs whose text holds the tokenizer's special tokens (e.g. '<|im_end|>'), with "
            "each token broken by a zero-width space so it is tokenized as plain text. Off: such a pair is an "
            "error (or, with on_bad_row skip, a counted drop): it would forge a turn or end an answer early."
        },
    )
    allow_eval_on_train: bool = field(
        default=False,
        metadata={
            "help": "Allow a test split that reads the same rows as training (one data file, or the same "
            "split name twice); its figures are then labelled 'not held out'. Off: such a run is refused."
        },
    )
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "CPU threads of torch in each process; default: the cores this process may use divided "
            "by the processes on this machine (two processes × two threads on two cores stall each other)."
        },
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Length limit of each answer in the win-rate eval."})
    pack_sequences: bool = field(
        default=False,
        metadata={
            "help": "Padding-free DPO: the chosen and rejected sequences of a batch go through the model as "
            "one row of real tokens, position ids restarting at each sequence (TRL 1.16 disables its own "
            "padding_free for DPO). Same loss and gradients as padded (the cross-check verifies it), no "
            "compute spent on padding."
        },
    )
    max_tokens_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Make training batches by real tokens instead of by pairs: pairs in a seeded random order "
            "fill a batch up to this many tokens (prompt + chosen + prompt + rejected; a pair is never split), "
            "so every step costs about the same. Replaces per_device_train_batch_size for training; meant "
            "with pack_sequences, which removes the padding such batches would carry."
        },
    )
    reference_logps: str | None = field(
        default=None,
        metadata={
            "help": "Read the reference log-probs from this file (written once by `dpo-recipes reference-logps` "
            "with the same recipe) instead of running the reference model: every rank and later run reads "
            "the same numbers. A file computed for other pairs, max_length, truncation, ld_alpha, precision, "
            "reference weights or TRL version is refused, naming what differs."
        },
    )
    crosscheck: bool = field(
        default=True,
        metadata={
            "help": "Verify TRL's loss for this run's loss settings against the from-scratch cross-check "
            "(a separate CPU process on the embedded model, seconds) and put the verdict in the model card."
        },
    )


def load_splits(script_args: RecipeArguments, seed: int) -> dict:
    """The train/test splits in TRL's format: one dataset through its recipe, or a mixture of several."""
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


def weights_fingerprint(model) -> list[float]:
    """A float64 sum of squares per trainable tensor: cheap to keep (one number each, even for a full
    fine-tune), and it moves with any optimizer step that changes a weight."""
    with torch.no_grad():
        return [float(p.detach().double().pow(2).sum()) for p in model.parameters() if p.requires_grad]


def trainer_state(folder: Path) -> dict | None:
    """The trainer state saved in ``folder``, or None when it is missing or does not parse (a save cut off by a
    kill, or a full disk leaving a 0-byte file): such a checkpoint is incomplete."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "global_step" in state else None


def checkpoint_to_resume(value: str | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint path, or ``last`` for the newest *complete* checkpoint in the
    output directory. transformers writes trainer_state.json last, so a checkpoint whose state is missing or
    unreadable was cut off while being written; it is skipped with a warning, never resumed from. A run that
    already finished is not trained again."""
    if value is None:
        return None
    if str(value).lower() not in ("last", "true"):
        if trainer_state(Path(value)) is None:
            raise ConfigError(f"checkpoint {value!r} is missing or incomplete (no readable trainer_state.json)")
        return value
    finished = trainer_state(Path(output_dir)) if (Path(output_dir) / "metrics.json").is_file() else None
    if finished is not None:
        raise ConfigError(
            f"the run in {output_dir!r} already finished at step {finished['global_step']} "
            "(metrics.json holds its results): nothing to resume. To train further, start a new run "
            "with another --output_dir"
        )
    numbered = [path for path in Path(output_dir).glob("checkpoint-*") if path.name.split("-", 1)[1].isdigit()]
    found = sorted(numbered, key=lambda path: int(path.name.split("-", 1)[1]))  # not a user's "checkpoint-old"
    complete = [path for path in found if trainer_state(path) is not None]
    for partial in sorted(set(found) - set(complete)):
        logger.warning("Ignoring %s: its trainer_state.json is missing or unreadable (cut off while written)", partial)
    if not complete:
        logger.warning("No complete checkpoint in %s: training from the start", output_dir)
        return None
    logger.info("Resuming from %s", complete[-1])
    return str(complete[-1])


@contextlib.contextmanager
def output_dir_lock(output_dir: str):
    """One run at a time per output directory: a second run into the same directory fails at once instead of
    mixing its files with the first's. Only the main process (RANK 0) takes the lock; the OS frees it when the
    process ends, however it ends."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(output_dir) / ".dpo-recipes.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            raise ConfigError(
                f"output_dir {output_dir!r} is in use by another run (process {handle.read().strip()}); "
                "wait for it or choose another --output_dir"
            ) from error
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def save_final_model(trainer, output_dir: str) -> None:
    """The trained adapter (or model) and trainer state, each file moved into place whole: a run killed while
    saving leaves a scratch folder, never a truncated adapter_model.safetensors that looks complete."""
    scratch = Path(output_dir) / ".final-model.partial"
    if trainer.accelerator.is_main_process and scratch.exists():
        shutil.rmtree(scratch)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(scratch))  # every process takes part (sharded weights are gathered here)
    if trainer.accelerator.is_main_process:
        for item in scratch.iterdir():
            if item.is_file():
                follow_umask(item)
            os.replace(item, Path(output_dir) / item.name)
        scratch.rmdir()
        with atomic_path(Path(output_dir) / "trainer_state.json") as state:
            trainer.state.save_to_json(str(state))
    trainer.accelerator.wait_for_everyone()


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
    started = time.time()
    threads = configure_threads(script_args.torch_threads)
    resume = checkpoint_to_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    splits = load_splits(script_args, training_args.seed)
    check_data(splits, tokenizer, script_args.on_bad_row, script_args.escape_special_tokens)
    trainer = build_trainer(script_args, training_args, model_args, splits)
    monitor = LikelihoodDisplacementMonitor(training_args.beta)
    trainer.add_callback(monitor)

    logger.info("Held-out evaluation before training (policy = reference)")
    eval_before = trl_internals.evaluate_before_training(trainer)
    train_started, fingerprint = time.time(), weights_fingerprint(trainer.model)
    train_result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - train_started
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
    eval_after = trainer.evaluate()
    finish_collectives(trainer.accelerator)  # the last collective is behind us; the rest is the main process's
    if not trainer.accelerator.is_main_process:
        return {}

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
        "torch_threads": threads,
        "wall_time_s": {"train": train_seconds, "total": time.time() - started},
    }
    write_outputs(metrics, comparisons, trainer.state.log_history, monitor, script_args, training_args, model_args)
    return metrics


def build_trainer(script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig, splits: dict):
    """The DPOTrainer of a run; the first ``eval_pairs`` test pairs are TRL's held-out set. Pairs TRL drops are
    counted in their split's account."""
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
    measured, comparisons = compare_across_temperatures(
        trainer.accelerator.unwrap_model(trainer.model),
        trainer.processing_class,
        unique_prompts(test, script_args.win_rate_prompts),
        get_judge(script_args.judge),
        ref_model=trainer.ref_model,
        temperatures=sorted(set(script_args.win_rate_temperatures)),
        max_new_tokens=script_args.max_new_tokens,
        seed=seed,
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
    write_model_card(output_dir, metrics, script_args, training_args, model_args, verdict)
    print("\n" + summary_paragraph(metrics, output_dir))


DESCRIPTION = """Train a DPO policy with TRL from a raw preference dataset (see `dpo-recipes data list`).
--config PATH loads a recipe YAML (e.g. recipes/zephyr_style/tiny.yaml); every YAML key is also a flag below,
and flags given here override the YAML. The options are this project's (dataset recipe, judge, cross-check),
then TRL's DPOConfig (training and loss) and ModelConfig (model, LoRA, 4-bit)."""


def make_parser(**kwargs) -> TrlParser:
    return TrlParser((RecipeArguments, DPOConfig, ModelConfig), description=DESCRIPTION, **kwargs)


@dataclass
class ReferenceFileArguments:
    output_file: str = field(
        metadata={"help": "Where to write the reference log-probs (safetensors; the run's key and a checksum inside)."}
    )


def write_reference_logps(
    script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig, output_file: str
) -> dict[str, str]:
    """Compute a recipe's reference log-probs once (TRL's precompute) and write them to ``output_file`` for runs
    with ``reference_logps`` to read; the file's key (what the numbers depend on) is returned."""
    configure_threads(script_args.torch_threads)
    tokenizer = check_run(script_args, training_args, model_args)
    splits = load_splits(script_args, training_args.seed)
    check_data(splits, tokenizer, script_args.on_bad_row, script_args.escape_special_tokens)
    script_args = dataclasses.replace(script_args, reference_logps=None)
    trainer = build_trainer(
        script_args, trl_internals.trainer_config(training_args, precompute_ref_log_probs=True), model_args, splits
    )
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
    try:
        check_removed(sys.argv[1:] if argv is None else argv)
        script_args, training_args, model_args, output = parser.parse_args_and_config(argv)
        return write_reference_logps(script_args, training_args, model_args, output.output_file)
    except (RecipeError, ConfigError) as error:
        raise SystemExit(f"{parser.prog}: error: {error}") from error


def run_from_command_line(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Parse flags (and --config), train; a bad dataset, model or setting ends in one line naming it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop_with_launcher()
    parser = make_parser(prog=prog) if prog else make_parser()
    try:
        check_removed(sys.argv[1:] if argv is None else argv)
        return main(*parser.parse_args_and_config(argv))
    except (RecipeError, ConfigError) as error:
        raise SystemExit(f"{parser.prog}: error: {error}") from error
