"""What a run was: the record training writes into metrics.json["run"], and everything after training reads
(evaluation, merging, the β sweep, the report and the model card)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from trl import get_quantization_config


@dataclass(frozen=True)
class RunRecord:
    model: str  # hub id, local path or embedded name: the base (and, for LoRA, the reference)
    dataset: str  # hub id, path or embedded name; "mixture" for a dataset_mixture run
    dataset_recipe: str
    test_split: str
    peft: bool = False
    load_in_4bit: bool = False
    quantization: dict | None = None  # BitsAndBytesConfig.to_dict() of a 4/8-bit base, else None
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    beta: float = 0.1
    learning_rate: float | None = None
    world_size: int = 1
    judge: str | None = None
    reference_logps: str | None = None  # the file the reference log-probs were read from, if any
    max_length: int | None = None  # TRL's max_length of prompt + completion
    truncation_mode: str = "keep_start"
    seed: int | None = None  # DPOConfig's seed (data order, dropout, the win rate's sampling)

    @classmethod
    def from_args(cls, script_args, training_args, model_args) -> RunRecord:
        """The record of a run about to train with these (RecipeArguments, DPOConfig, ModelConfig)."""
        quantization = get_quantization_config(model_args)
        return cls(
            model=model_args.model_name_or_path,
            dataset="mixture" if script_args.dataset_mixture else script_args.dataset_name,
            dataset_recipe=script_args.dataset_recipe,
            test_split=script_args.dataset_test_split,
            peft=model_args.use_peft,
            load_in_4bit=model_args.load_in_4bit,
            quantization=quantization.to_dict() if quantization else None,
            loss_type=list(training_args.loss_type),
            beta=training_args.beta,
            learning_rate=training_args.learning_rate,
            world_size=training_args.world_size,
            judge=script_args.judge,
            reference_logps=script_args.reference_logps,
            max_length=training_args.max_length,
            truncation_mode=training_args.truncation_mode,
            seed=training_args.seed,
        )

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> RunRecord:
        """A record from metrics.json; keys this version does not know (a newer writer's) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> RunRecord | None:
        """The record of the run in ``run_dir``, or None when it holds no metrics.json (a bare adapter)."""
        path = Path(run_dir) / "metrics.json"
        if not path.is_file():
            return None
        return cls.from_json(json.loads(path.read_text())["run"])
