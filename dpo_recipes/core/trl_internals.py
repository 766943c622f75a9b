"""Every use of private members of TRL, accelerate and datasets, in one place, for the versions it was written for.

The project needs five things that TRL 1.16, accelerate 1.x and datasets offer no public way to do:

- reference log-probs precomputed under a key of our choosing (`precompute_reference_logps`): TRL's own key is
  the tokenized dataset's fingerprint, which changes with every DPOConfig field (see
  `dpo_recipes.trainer.reference_logps.attach_reference_logps`), or read from a file (`use_reference_columns`);
- the metrics of one ``compute_loss`` call, which DPOTrainer keeps in ``_metrics`` until the next log, and its
  running token count (`logged_metrics`, `train_tokens_seen`, for the cross-check);
- a held-out evaluation before ``train()`` that does not break data parallelism (`evaluate_before_training`).
  transformers' public ``eval_on_start`` evaluates inside ``train()``, after a resumed run has loaded its
  checkpoint: it would report the resumed policy as "before training", so it cannot replace this;
- a DPOTrainer built with settings that differ from the user's DPOConfig without changing it
  (`trainer_config`): a shallow copy, since ``dataclasses.replace`` re-runs the config's validation;
- a datasets ``Dataset``'s fingerprint, the identity of its rows, for cache keys of our own
  (`dataset_fingerprint`; `dpo_recipes.data.registry.prepare`).

Importing this module fails at once, with the versions, on a TRL or accelerate it was not written for: private
members change without notice between releases.
"""

from __future__ import annotations

import copy
from importlib import metadata

from packaging.version import Version

SUPPORTED = {"trl": (Version("1.16"), Version("1.17")), "accelerate": (Version("1.10"), Version("2"))}


def unsupported_versions(installed: dict[str, str]) -> list[str]:
    """The packages in ``installed`` (name → version) outside the range this module was written for."""
    problems = []
    for name, version in installed.items():
        low, high = SUPPORTED[name]
        if not low <= Version(version) < high:
            problems.append(f"{name} {version} (this module supports >={low},<{high})")
    return problems


# the installed versions, read without importing accelerate (it imports torch: the data path needs neither)
_problems = unsupported_versions({name: metadata.version(name) for name in SUPPORTED})
if _problems:
    raise ImportError(
        f"dpo_recipes.core.trl_internals uses private members of {', '.join(_problems)}; install the supported "
        "versions (pip install -e .) or port this module"
    )


def trainer_config(training_args, **changes):
    """A copy of ``training_args`` with ``changes``: the trainer gets it, the caller's object stays as given."""
    config = copy.copy(training_args)
    for name, value in changes.items():
        setattr(config, name, value)
    return config


def precompute_reference_logps(trainer, dataset, name: str, batch_size: int, weights_hash: str):
    """``dataset`` with TRL's ``ref_chosen_logps``/``ref_rejected_logps`` columns, through TRL's own precompute
    and its cache (keyed by the dataset's fingerprint and ``weights_hash``); the trainer then reads them."""
    trainer._precompute_model_hash = weights_hash
    with_reference = trainer._precompute_ref_logps(dataset, name, batch_size)
    use_reference_columns(trainer, weights_hash)
    return with_reference


def use_reference_columns(trainer, weights_hash: str) -> None:
    """Make the trainer read the reference log-probs from its batches' ``ref_*_logps`` columns instead of running
    the reference; a dataset passed to ``evaluate()`` later is precomputed by TRL under ``weights_hash``."""
    trainer._precompute_model_hash = weights_hash
    trainer.precompute_ref_logps = True
    trainer.args.precompute_ref_log_probs = True


def clear_logged_metrics(trainer, mode: str = "train") -> None:
    trainer._metrics[mode].clear()


def logged_metrics(trainer, mode: str = "train") -> dict[str, float]:
    """The latest value of every metric DPOTrainer recorded since its last log (its ``_metrics`` buffer)."""
    return {key: values[-1] for key, values in trainer._metrics[mode].items()}


def train_tokens_seen(trainer) -> int:
    """The running count of attended tokens DPOTrainer logs as ``num_tokens`` (its ``_total_train_tokens``)."""
    return int(trainer._total_train_tokens)


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


def dataset_fingerprint(dataset) -> str:
    """What datasets calls the dataset's fingerprint: a hash of where its rows came from and every step since."""
    return dataset._fingerprint
