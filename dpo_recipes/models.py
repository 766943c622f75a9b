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


def add_pair_lengths(dataset: Dataset) -> Dataset:
    """The ``length`` column transformers' LengthGroupedSampler reads, on TRL's tokenized pairs: the longer of
    prompt + chosen and prompt + rejected, which is what the pair pads its batch to. A pair stays one row, so
    grouping never splits it."""

    def length(row: dict) -> dict:
        return {"length": len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))}

    return dataset.map(length, desc="Measuring pair lengths")


def build_dpo_trainer(
    model_args: ModelConfig,
    training_args: DPOConfig,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    **trainer_kwargs,
) -> DPOTrainer:
    """A DPOTrainer over ``model_args.model_name_or_path`` (hub id, local path or embedded name).

    With ``train_sampling_strategy="group_by_length"`` batches are drawn from pairs of similar length (less
    padding; the order stays seeded). The length column must reach the sampler, so unused columns are kept
    (TRL's collator reads only the token columns it needs).
    """
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    grouped = training_args.train_sampling_strategy == "group_by_length"
    if grouped:
        training_args.remove_unused_columns = False
    trainer = DPOTrainer(
        model=embedded.resolve(model_args.model_name_or_path),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        **trainer_kwargs,
    )
    if grouped and isinstance(trainer.train_dataset, Dataset):
        trainer.train_dataset = add_pair_lengths(trainer.train_dataset)
    return trainer
