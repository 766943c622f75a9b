"""Configure TRL's DPOTrainer for a full, LoRA or 4-bit NF4 QLoRA policy from TRL's ModelConfig.

The reference of a LoRA run is not a second model: DPOTrainer computes it with the adapter disabled, so
one set of base weights serves both (TRL: ``peft_config`` given, ``ref_model`` omitted).
"""

from __future__ import annotations

import hashlib

import trl
from datasets import Dataset
from datasets.fingerprint import Hasher
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config, get_quantization_config
from trl.trainer.utils import hash_module

from dpo_recipes import embedded, trl_internals
from dpo_recipes.packing import batch_by_tokens, pack_trainer


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


def reference_weights_hash(trainer: DPOTrainer) -> str:
    """A hash of the reference's weights. With a LoRA policy the reference is the base with the adapter
    disabled, so the adapter (randomly initialised, different in every run) is left out of the hash."""
    if trainer.ref_model is not None or not hasattr(trainer.model, "peft_config"):
        return hash_module(trainer.ref_model or trainer.model)
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        if "lora_" not in name:
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def attach_reference_logps(trainer: DPOTrainer) -> None:
    """Reference log-probs of the train (and eval) sets through TRL's own precompute and cache, under a key
    that holds only what they depend on: the tokenized pairs, max_length, truncation mode, TRL's version and
    (added by TRL) a hash of the reference weights.

    TRL's own key is the tokenized dataset's fingerprint, and its max_length filter closes over the whole
    DPOConfig, so changing β, the learning rate or the output directory would recompute them. Here a β sweep
    or a rerun with other optimizer settings reads them back.
    """
    args, weights = trainer.args, reference_weights_hash(trainer)

    def with_reference(data, name: str, batch_size: int):
        tokens = [list(data[column]) for column in ("prompt_ids", "chosen_ids", "rejected_ids")]  # values
        key = Hasher.hash([tokens, args.max_length, args.truncation_mode, trl.__version__])
        keyed = data.map(lambda row: {}, new_fingerprint=key, desc=f"Keying {name} pairs for the reference cache")
        return trl_internals.precompute_reference_logps(trainer, keyed, name, batch_size, weights)

    trainer.train_dataset = with_reference(
        trainer.train_dataset, "train", args.precompute_ref_batch_size or args.per_device_train_batch_size
    )
    eval_batch = args.precompute_ref_batch_size or args.per_device_eval_batch_size
    if isinstance(trainer.eval_dataset, dict):
        trainer.eval_dataset = {
            name: with_reference(data, name, eval_batch) for name, data in trainer.eval_dataset.items()
        }
    elif trainer.eval_dataset is not None:
        trainer.eval_dataset = with_reference(trainer.eval_dataset, "eval", eval_batch)


def build_dpo_trainer(
    model_args: ModelConfig,
    training_args: DPOConfig,
    train_dataset: Dataset,
    eval_dataset: Dataset | None = None,
    pack_sequences: bool = False,
    max_tokens_per_batch: int | None = None,
    **trainer_kwargs,
) -> DPOTrainer:
    """A DPOTrainer over ``model_args.model_name_or_path`` (hub id, local path or embedded name).

    With ``train_sampling_strategy="group_by_length"`` batches are drawn from pairs of similar length (less
    padding; the order stays seeded). The length column must reach the sampler, so unused columns are kept
    (TRL's collator reads only the token columns it needs). With ``precompute_ref_log_probs`` the train set's
    reference log-probs come from a cache that survives changes of β and other settings that cannot change
    them (``attach_reference_logps``). With ``pack_sequences`` every forward is padding-free
    (`dpo_recipes.packing`); with ``max_tokens_per_batch`` training batches are made by real tokens, not by
    pairs. The trainer works on a copy of ``training_args``; the caller's is left as given.
    """
    grouped = training_args.train_sampling_strategy == "group_by_length"
    args = trl_internals.trainer_config(
        training_args,
        model_init_kwargs=model_init_kwargs(model_args, training_args),
        precompute_ref_log_probs=False,  # attached below, under a stable key
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
    if pack_sequences:
        pack_trainer(trainer)
    if training_args.precompute_ref_log_probs:
        attach_reference_logps(trainer)
    if grouped and isinstance(trainer.train_dataset, Dataset):
        trainer.train_dataset = add_pair_lengths(trainer.train_dataset)
    if max_tokens_per_batch is not None:
        batch_by_tokens(trainer, max_tokens_per_batch)
    return trainer


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
