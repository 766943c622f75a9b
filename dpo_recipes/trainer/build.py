"""Configure TRL's DPOTrainer for a full, LoRA or 4-bit NF4 QLoRA policy from TRL's ModelConfig.

The reference of a LoRA run is not a second model: DPOTrainer computes it with the adapter disabled, so
one set of base weights serves both (TRL: ``peft_config`` given, ``ref_model`` omitted).
"""

from __future__ import annotations

import torch
from datasets import Dataset
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config, get_quantization_config

from dpo_recipes.core import trl_internals
from dpo_recipes.core.errors import ConfigError
from dpo_recipes.trainer.packing import batch_by_tokens, pack_trainer
from dpo_recipes.trainer.reference_logps import attach_reference_logps, load_reference_logps
from dpo_recipes.worlds import embedded


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
    pack_sequences: bool = False,
    max_tokens_per_batch: int | None = None,
    reference_logps: str | None = None,
    **trainer_kwargs,
) -> DPOTrainer:
    """A DPOTrainer over ``model_args.model_name_or_path`` (hub id, local path or embedded name).

    With ``train_sampling_strategy="group_by_length"`` batches are drawn from pairs of similar length (less
    padding; the order stays seeded). The length column must reach the sampler, so unused columns are kept
    (TRL's collator reads only the token columns it needs). With ``precompute_ref_log_probs`` the train set's
    reference log-probs come from a cache that survives changes of β and other settings that cannot change
    them (``attach_reference_logps``); with ``reference_logps`` (a file written by `save_reference_logps`) they
    are read from that file, which must match this run. With ``pack_sequences`` every forward is padding-free
    (`dpo_recipes.trainer.packing`); with ``max_tokens_per_batch`` training batches are made by real tokens, not by
    pairs. The trainer works on a copy of ``training_args``; the caller's is left as given.
    """
    fixed_reference = reference_logps or training_args.precompute_ref_log_probs
    if training_args.sync_ref_model and fixed_reference:
        # TRL refuses this pair itself, but only when its own precompute flag is on at construction, and here
        # the flag is off then (the log-probs are attached afterwards): say it here instead
        raise ConfigError(
            "sync_ref_model updates the reference during training, so precomputed reference log-probs "
            "(precompute_ref_log_probs, reference_logps) would go stale: use one or the other"
        )
    grouped = training_args.train_sampling_strategy == "group_by_length"
    args = trl_internals.trainer_config(
        training_args,
        model_init_kwargs=model_init_kwargs(model_args, training_args),
        precompute_ref_log_probs=False,  # attached below, under a stable key
        push_to_hub=False,  # pushed once when the run's folder is final (training.sharing), not at every save
        remove_unused_columns=training_args.remove_unused_columns and not grouped,
    )
    trainer = DPOTrainer(
        model=embedded.resolve(model_args.model_name_or_path),
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
        **trainer_kwargs,
    )
    keep_4bit_layers_trainable(trainer.model)
    if args.fp16:
        train_float32_weights(trainer.model)
    if pack_sequences:
        pack_trainer(trainer)
    if reference_logps:
        load_reference_logps(trainer, reference_logps)
    elif training_args.precompute_ref_log_probs:
        attach_reference_logps(trainer)
    if grouped and isinstance(trainer.train_dataset, Dataset):
        trainer.train_dataset = add_pair_lengths(trainer.train_dataset)
    if max_tokens_per_batch is not None:
        batch_by_tokens(trainer, max_tokens_per_batch)
    return trainer


def train_float32_weights(model) -> list[str]:
    """With fp16 mixed precision, every trainable weight in float32; returns the names of those cast.

    fp16 autocast keeps float32 master weights and scales the loss; its GradScaler unscales only float16 or
    float32 gradients (CUDA has no bfloat16 kernel for it, and a T4 no bfloat16 at all). TRL 1.16 casts the
    adapters of a quantized model to bfloat16, so a QLoRA run with fp16 would fail at its first optimizer step
    ("_amp_foreach_non_finite_check_and_unscale_cuda" not implemented for 'BFloat16'), and a model loaded in
    float16 would train float16 weights, losing updates smaller than their rounding. CPU runs do not show it.
    """
    cast = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and parameter.dtype in (torch.float16, torch.bfloat16):
            parameter.data = parameter.data.float()
            cast.append(name)
    return cast


def keep_4bit_layers_trainable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference. On a CPU with AVX512-BF16, a 4-bit
    layer run in eval mode on an input without gradient (the held-out evaluation before training) rewrites its
    weight, in place and for good, into a layout whose matmul passes no gradient back: every adapter below it then
    stops learning, and a QLoRA run trains nothing (bitsandbytes 0.50; measured: 0 of 24 adapter tensors changed
    after evaluate() and two steps). The layer's own switch turns that conversion off."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def policy_kind(model_args: ModelConfig) -> str:
    """'qlora', 'lora' or 'full': what a run trains."""
    if model_args.use_peft:
        return "qlora" if model_args.load_in_4bit or model_args.load_in_8bit else "lora"
    return "full"
