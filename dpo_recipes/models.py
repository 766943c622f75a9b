"""Configure TRL's DPOTrainer for a full, LoRA or 4-bit NF4 QLoRA policy from TRL's ModelConfig.

The reference of a LoRA run is not a second model: DPOTrainer computes it with the adapter disabled, so
one set of base weights serves both (TRL: ``peft_config`` given, ``ref_model`` omitted).
"""

from __future__ import annotations

from datasets import Dataset
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config, get_quantization_config

from dpo_recipes import embedded


def model_init_kwargs(model_args: ModelConfig, training_args: DPOConfig) -> dict:
    """What ``from_pretrained`` receives, as in TRL's own ``scripts/dpo.py``; YAML ``model_init_kwargs`` win.

    (``trust_remote_code`` lives in DPOConfig, and DPOTrainer passes it on itself.)
    """
    kwargs = dict(
        revision=model_args.model_revision,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    return {**kwargs, **(training_args.model_init_kwargs or {})}


def build_dpo_trainer(
    model_args: ModelConfig,
    training_args: DPOConfig,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    **trainer_kwargs,
) -> DPOTrainer:
    """A DPOTrainer over ``model_args.model_name_or_path`` (hub id, local path or embedded name)."""
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    return DPOTrainer(
        model=embedded.resolve(model_args.model_name_or_path),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        **trainer_kwargs,
    )
