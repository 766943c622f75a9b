"""Reference log-probs: what they depend on, TRL's precompute under that key, and a file that carries them.

A DPO run with a fixed reference needs log π_ref(y|x) of every chosen and rejected answer once. TRL computes
them at the start of every run, on every rank; this module keys them by what they depend on, so that

- TRL's own precompute and datasets cache serve a β sweep or a rerun (`attach_reference_logps`), and
- one process (one machine with the accelerator) can compute them once and write a checksummed file
  (`save_reference_logps`, `dpo-recipes reference-logps`) that every rank, later run and machine reads
  (`load_reference_logps`, the recipe's ``reference_logps`` option). A file that does not match the run is
  refused, naming each part that differs; a file whose numbers do not match its checksum is refused too.

What the numbers depend on (`reference_key`): the tokenized pairs of each split, max_length, truncation mode,
ld_alpha (LD-DPO weights the reference's tail tokens as well), the compute precision (bf16/fp16 autocast), the
reference's weights (a LoRA adapter left out: its reference is the base with the adapter disabled) and TRL's
version. Not part of it: β, the loss type, the learning rate, the batch size, packing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import trl
from datasets import Dataset
from datasets.fingerprint import Hasher
from safetensors import safe_open
from safetensors.torch import save_file
from trl.trainer.utils import hash_module

from dpo_recipes.core import trl_internals
from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_path

logger = logging.getLogger(__name__)
FORMAT = "dpo-recipes reference log-probs v1"
COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")


def reference_weights_hash(trainer) -> str:
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


def pairs_hash(dataset: Dataset) -> str:
    """A hash of a split's tokenized pairs (TRL's ``prompt_ids``/``chosen_ids``/``rejected_ids``), in order."""
    return Hasher.hash([list(dataset[column]) for column in ("prompt_ids", "chosen_ids", "rejected_ids")])


def run_settings(args) -> dict[str, str]:
    """The settings of a run that change the reference's log-probs, as strings (file metadata is strings)."""
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    return {
        "max_length": str(args.max_length),
        "truncation_mode": str(args.truncation_mode),
        "ld_alpha": str(args.ld_alpha),
        "compute_precision": precision,
        "trl": trl.__version__,
    }


def trainer_splits(trainer) -> dict[str, Dataset]:
    """The trainer's tokenized splits by name: ``train`` and its eval split(s)."""
    splits = {"train": trainer.train_dataset}
    if isinstance(trainer.eval_dataset, dict):
        splits.update(trainer.eval_dataset)
    elif trainer.eval_dataset is not None:
        splits["eval"] = trainer.eval_dataset
    return splits


def reference_key(trainer, weights: str | None = None) -> dict[str, str]:
    """Everything the reference log-probs of this trainer's splits depend on, part by part."""
    key = {**run_settings(trainer.args), "reference_weights": weights or reference_weights_hash(trainer)}
    for name, data in trainer_splits(trainer).items():
        key[f"pairs:{name}"] = pairs_hash(data)
    return key


def attach_reference_logps(trainer) -> None:
    """Reference log-probs of the train (and eval) sets through TRL's own precompute and cache, under a key
    that holds only what they depend on (`reference_key`).

    TRL's own key is the tokenized dataset's fingerprint, and its max_length filter closes over the whole
    DPOConfig, so changing β, the learning rate or the output directory would recompute them. Here a β sweep
    or a rerun with other optimizer settings reads them back.
    """
    args, weights = trainer.args, reference_weights_hash(trainer)
    settings = run_settings(args)

    def with_reference(data, name: str, batch_size: int):
        key = Hasher.hash([pairs_hash(data), settings])
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


def checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """sha256 over the key parts and every tensor's name, shape and bytes."""
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        digest.update(f"{name}{tuple(tensors[name].shape)}".encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_reference_logps(trainer, path: str | Path) -> Path:
    """Write the reference log-probs the trainer's splits carry (after `attach_reference_logps`) to ``path``
    (safetensors: one float32 vector per split and answer; the key and a checksum in its metadata), atomically."""
    splits = trainer_splits(trainer)
    missing = [name for name, data in splits.items() if not set(COLUMNS) <= set(data.column_names)]
    if missing:
        raise ValueError(f"splits {missing} carry no reference log-probs yet: run attach_reference_logps first")
    tensors = {
        f"{name}/{column}": torch.tensor(data[column], dtype=torch.float32)
        for name, data in splits.items()
        for column in COLUMNS
    }
    for name, values in tensors.items():  # a NaN or -inf reference would turn every loss it touches into NaN
        bad = (~torch.isfinite(values)).nonzero().flatten().tolist()
        if bad:
            raise ConfigError(
                f"reference log-probs {name}: row {bad[0]} is {values[bad[0]].item()} ({len(bad)} rows not finite); "
                "nothing written (a reference in fp16 can overflow: compute it in fp32 or bf16)"
            )
    metadata = {"format": FORMAT, **reference_key(trainer)}
    metadata["checksum"] = checksum(tensors, metadata)
    with atomic_path(path) as scratch:
        save_file(tensors, str(scratch), metadata=metadata)
    return Path(path)


def read_reference_logps(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and key of a reference log-probs file, after checking its format and checksum."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"reference log-probs file {path}: not found (write it with `dpo-recipes reference-logps`)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise ConfigError(f"reference log-probs file {path}: not a readable safetensors file: {error}") from error
    if metadata.get("format") != FORMAT:
        raise ConfigError(f"reference log-probs file {path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    stored = metadata.pop("checksum", None)
    if stored != checksum(tensors, metadata):
        raise ConfigError(f"reference log-probs file {path}: checksum mismatch, the file is damaged; write it again")
    return tensors, metadata


def mismatches(expected: dict[str, str], found: dict[str, str]) -> list[str]:
    """One line per key part that differs between the run (``expected``) and a file (``found``)."""
    lines = []
    for part in sorted(set(expected) | set(found)):
        if part == "format":
            continue
        if expected.get(part) != found.get(part):
            lines.append(f"{part}: run {expected.get(part, '(none)')!r}, file {found.get(part, '(none)')!r}")
    return lines


def load_reference_logps(trainer, path: str | Path) -> None:
    """Give the trainer's splits the reference log-probs stored in ``path``, after checking that the file was
    computed for exactly these pairs, settings and reference weights (every differing part is named)."""
    tensors, found = read_reference_logps(path)
    weights = reference_weights_hash(trainer)
    expected = reference_key(trainer, weights)
    differ = mismatches(expected, found)
    if differ:
        raise ConfigError(
            f"reference log-probs file {path} was computed for another run; it cannot serve this one:\n  "
            + "\n  ".join(differ)
        )
    loaded = {
        name: data.add_column(COLUMNS[0], tensors[f"{name}/{COLUMNS[0]}"].tolist()).add_column(
            COLUMNS[1], tensors[f"{name}/{COLUMNS[1]}"].tolist()
        )
        for name, data in trainer_splits(trainer).items()
    }
    trainer.train_dataset = loaded.pop("train")
    if isinstance(trainer.eval_dataset, dict):
        trainer.eval_dataset = loaded
    elif trainer.eval_dataset is not None:
        trainer.eval_dataset = loaded["eval"]
    trl_internals.use_reference_columns(trainer, weights)
    counts = ", ".join(f"{len(data)} {name}" for name, data in trainer_splits(trainer).items())
    logger.info("Reference log-probs of %s pairs read from %s (every key part matches this run)", counts, path)
