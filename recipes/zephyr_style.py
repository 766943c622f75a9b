"""Zephyr-style dDPO with TRL: a raw preference dataset → a DPO-trained LoRA, QLoRA or full policy.

Zephyr's method is dSFT then dDPO: the model given here is already SFT-trained and is also the reference
(for LoRA/QLoRA, the same weights with the adapter disabled). Each preset is a YAML file beside this script.

    # Offline tiny preset: embedded SFT model + toy preference world, 2 CPU cores, a few minutes
    accelerate launch recipes/zephyr_style.py --config recipes/zephyr_style/tiny.yaml

    # Zephyr-7B-β QLoRA on one GPU
    accelerate launch --num_processes 1 recipes/zephyr_style.py --config recipes/zephyr_style/qlora.yaml

    # Zephyr-7B-β full fine-tune on 8 GPUs (an accelerate DeepSpeed ZeRO-3 config)
    accelerate launch --config_file zero3.yaml recipes/zephyr_style.py --config recipes/zephyr_style/full.yaml

Every YAML key is a flag too, and flags override the YAML (e.g. ``--beta 0.05 --max_steps 20``); unknown
YAML keys are an error. ``--help`` lists every option. The output directory receives the adapter (or model),
TRL's logs (trainer_state.json), metrics.json, training_curves.png and report.md.
"""

import json
import logging
import time
from dataclasses import dataclass, field

from trl import DPOConfig, ModelConfig, ScriptArguments, TrlParser

from dpo_recipes.data import load_preference_splits
from dpo_recipes.data.mixing import mix
from dpo_recipes.evaluation import compare_with_reference, get_judge, unique_prompts
from dpo_recipes.models import build_dpo_trainer
from dpo_recipes.reporting import plot_training_curves, summary_paragraph, write_metrics, write_report

logger = logging.getLogger("zephyr_style")


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


def main(script_args: RecipeArguments, training_args: DPOConfig, model_args: ModelConfig) -> dict:
    started = time.time()
    splits = load_splits(script_args, training_args.seed)
    train, test = splits["train"].dataset, splits["test"].dataset
    trainer = build_dpo_trainer(model_args, training_args, train, test)

    logger.info("Held-out evaluation before training (policy = reference)")
    eval_before = trainer.evaluate()
    train_started = time.time()
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    train_seconds = time.time() - train_started
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
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
            "loss_type": training_args.loss_type,
            "beta": training_args.beta,
            "learning_rate": training_args.learning_rate,
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
    print("\n" + summary_paragraph(metrics, output_dir))
    return metrics


def make_parser() -> TrlParser:
    return TrlParser((RecipeArguments, DPOConfig, ModelConfig))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main(*make_parser().parse_args_and_config())
