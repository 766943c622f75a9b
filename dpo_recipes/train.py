"""Training: a raw preference dataset through its recipe into TRL's DPOTrainer, then the run's outputs.

``RecipeArguments`` (this project's options) sit beside TRL's ``DPOConfig`` and ``ModelConfig`` in one
``TrlParser``, so every YAML key is a flag and flags override the YAML. ``main`` is what both
``recipes/zephyr_style.py`` and ``dpo-recipes train`` run. The output directory receives the adapter (or
model), TRL's logs (trainer_state.json), metrics.json, training_curves.png, report.md and the model card
(README.md).
"""

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers.integrations import TensorBoardCallback
from trl import DPOConfig, ModelConfig, ScriptArguments, TrlParser, get_quantization_config

from dpo_recipes.crosscheck.runner import crosscheck_in_subprocess, setting_from_config
from dpo_recipes.data import RecipeError, load_preference_splits
from dpo_recipes.data.mixing import mix
from dpo_recipes.errors import ConfigError
from dpo_recipes.evaluation import compare_with_reference, get_judge, unique_prompts
from dpo_recipes.files import atomic_path
from dpo_recipes.model_card import policy_kind, write_model_card
from dpo_recipes.models import build_dpo_trainer
from dpo_recipes.preflight import check_data, check_run
from dpo_recipes.reporting import plot_training_curves, summary_paragraph, write_metrics, write_report

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
        metadata={"help": "TRL format the recipe emits: 'conversational' (message lists) or 'standard' (strings)."},
    )
    dataset_data_dir: str | None = field(default=None, metadata={"help": "data_dir of the dataset (HH subsets)."})
    dataset_mixture: list[dict] | None = field(
        default=None,
        metadata={"help": "YAML list of {dataset, recipe, fraction, train_split, test_split, options}; replaces "
                  "dataset_name (see dpo_recipes.data.mixing)."},
    )  # fmt: skip
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
    max_new_tokens: int = field(default=48, metadata={"help": "Length limit of each answer in the win-rate eval."})
    crosscheck: bool = field(
        default=True,
        metadata={"help": "Verify TRL's loss for this run's loss settings against the from-scratch cross-check "
                  "(a separate CPU process on the embedded model, seconds) and put the verdict in the model card."},
    )  # fmt: skip


def load_splits(script_args: RecipeArguments, seed: int) -> dict:
    """The train/test splits in TRL's format: one dataset through its recipe, or a mixture of several."""
    if script_args.dataset_mixture:
        return mix(script_args.dataset_mixture, script_args.dataset_format, seed, script_args.on_bad_row)
    options = script_args.dataset_recipe_options or {}
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
        **(json.loads(options) if isinstance(options, str) else options),
    )


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


def evaluate_before_training(trainer) -> dict:
    """Held-out metrics of the starting policy (= the reference), without breaking data parallelism.

    accelerate's evaluation-mode ``prepare_model`` marks the bare model as prepared, and ``train()`` then skips
    the DistributedDataParallel wrap: every process would train its own replica with no gradient all-reduce,
    and nothing would say so (tests/test_distributed.py caught it). Clearing the mark restores the wrap.
    """
    metrics = trainer.evaluate()
    model = trainer.model
    if trainer.args.world_size > 1 and trainer.model_wrapped is model and getattr(model, "_is_accelerate_prepared", 0):
        model._is_accelerate_prepared = False
        if model in trainer.accelerator._models:
            trainer.accelerator._models.remove(model)
    return metrics


def checkpoint_to_resume(value: str | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint path, or ``last`` for the newest *complete* checkpoint in the
    output directory. transformers writes trainer_state.json last, so a checkpoint without it was cut off
    while being written (a kill mid-save); it is skipped with a warning, never resumed from."""
    if value is None:
        return None
    if str(value).lower() not in ("last", "true"):
        if not (Path(value) / "trainer_state.json").is_file():
            raise ConfigError(f"checkpoint {value!r} is missing or incomplete (no trainer_state.json)")
        return value
    found = sorted(Path(output_dir).glob("checkpoint-*"), key=lambda path: int(path.name.rsplit("-", 1)[-1]))
    for partial in (path for path in found if not (path / "trainer_state.json").is_file()):
        logger.warning("Ignoring %s: it has no trainer_state.json, so it was cut off while being written", partial)
    complete = [path for path in found if (path / "trainer_state.json").is_file()]
    if not complete:
        logger.warning("No complete checkpoint in %s: training from the start", output_dir)
        return None
    logger.info("Resuming from %s", complete[-1])
    return str(complete[-1])


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
            os.replace(item, Path(output_dir) / item.name)
        scratch.rmdir()
        with atomic_path(Path(output_dir) / "trainer_state.json") as state:
            trainer.state.save_to_json(str(state))
    trainer.accelerator.wait_for_everyone()


def main(script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig) -> dict:
    started = time.time()
    name_run(script_args, training_args, model_args)
    check_run(script_args, training_args, model_args)  # seconds, before any weights or data load
    resume = checkpoint_to_resume(training_args.resume_from_checkpoint, training_args.output_dir)
    splits = load_splits(script_args, training_args.seed)
    check_data(splits)
    train, test = splits["train"].dataset, splits["test"].dataset
    trainer = build_dpo_trainer(model_args, training_args, train, test)
    name_tensorboard_dir(trainer, training_args)

    logger.info("Held-out evaluation before training (policy = reference)")
    eval_before = evaluate_before_training(trainer)
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.time() - train_started
    save_final_model(trainer, training_args.output_dir)
    logger.info("Held-out evaluation after training")
    eval_after = trainer.evaluate()
    if not trainer.accelerator.is_main_process:
        return {}

    comparison, win_rate = None, {"skipped": "no judge configured (set --judge)"}
    if script_args.judge:
        comparison = compare_with_reference(
            trainer.accelerator.unwrap_model(trainer.model),
            trainer.processing_class,
            unique_prompts(test, script_args.win_rate_prompts),
            get_judge(script_args.judge),
            ref_model=trainer.ref_model,
            max_new_tokens=script_args.max_new_tokens,
        )
        win_rate = {"judge": script_args.judge, **comparison.summary()}

    metrics = {
        "run": {
            "model": model_args.model_name_or_path,
            "dataset": script_args.dataset_name if not script_args.dataset_mixture else "mixture",
            "dataset_recipe": script_args.dataset_recipe,
            "test_split": script_args.dataset_test_split,
            "peft": model_args.use_peft,
            "load_in_4bit": model_args.load_in_4bit,
            "quantization": quantization.to_dict() if (quantization := get_quantization_config(model_args)) else None,
            "loss_type": training_args.loss_type,
            "beta": training_args.beta,
            "learning_rate": training_args.learning_rate,
            "world_size": training_args.world_size,
        },
        "data": {role: split.describe(role) for role, split in splits.items()},
        "eval_before": eval_before,
        "eval_after": eval_after,
        "train": {"global_step": trainer.state.global_step, **train_result.metrics},
        "win_rate": win_rate,
        "wall_time_s": {"train": train_seconds, "total": time.time() - started},
    }
    output_dir = training_args.output_dir
    write_metrics(f"{output_dir}/metrics.json", metrics)
    plot_training_curves(trainer.state.log_history, f"{output_dir}/training_curves.png")
    write_report(f"{output_dir}/report.md", metrics, comparison)
    verdict = {"skipped": "--crosscheck false"}
    if script_args.crosscheck:
        setting = setting_from_config(training_args.to_dict())
        verdict = crosscheck_in_subprocess(setting, policy_kind(model_args), f"{output_dir}/crosscheck.json")
    write_model_card(output_dir, metrics, script_args, training_args, model_args, verdict)
    print("\n" + summary_paragraph(metrics, output_dir))
    return metrics


DESCRIPTION = """Train a DPO policy with TRL from a raw preference dataset (see `dpo-recipes data list`).
--config PATH loads a recipe YAML (e.g. recipes/zephyr_style/tiny.yaml); every YAML key is also a flag below,
and flags given here override the YAML. The options are this project's (dataset recipe, judge, cross-check),
then TRL's DPOConfig (training and loss) and ModelConfig (model, LoRA, 4-bit)."""


def make_parser(**kwargs) -> TrlParser:
    return TrlParser((RecipeArguments, DPOConfig, ModelConfig), description=DESCRIPTION, **kwargs)


def run_from_command_line(argv: list[str] | None = None, prog: str | None = None) -> dict:
    """Parse flags (and --config), train; a bad dataset, model or setting ends in one line naming it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = make_parser(prog=prog) if prog else make_parser()
    try:
        return main(*parser.parse_args_and_config(argv))
    except (RecipeError, ConfigError) as error:
        raise SystemExit(f"{parser.prog}: error: {error}") from error
