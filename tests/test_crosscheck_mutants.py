"""The cross-check against planted bugs: one subtle mutant of TRL (or of the transformers loop it runs in) per
class of bug that happens in practice, each applied on its own; the check must report every one of them.

A mutant rewrites one line of the library's own source (or wraps one of its functions) for the duration of a
test. Dataset caching is off meanwhile, so no tokenization or reference log-prob computed by unmodified code
can be read back from the cache and hide the bug.
"""

import inspect
import sys
import textwrap

import datasets
import pytest
import transformers
from trl.trainer import dpo_trainer

from dpo_recipes.crosscheck import runner

DPO, COLLATOR = dpo_trainer.DPOTrainer, dpo_trainer.DataCollatorForPreference


def rewrite(owner, name: str, old: str, new: str):
    """``owner.name`` with the one occurrence of ``old`` in its source replaced by ``new``."""
    function = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(function))
    assert source.count(old) == 1, f"{old!r} is not once in {name}: the library changed; update the mutant"
    namespace = dict(vars(sys.modules[function.__module__]))
    exec(compile(source.replace(old, new), f"<mutant of {name}>", "exec"), namespace)
    return namespace[name]


def _drop_first_completion_token(monkeypatch):
    original = dpo_trainer.common_prefix_length
    monkeypatch.setattr(dpo_trainer, "common_prefix_length", lambda a, b: original(a, b) + 1)


MUTANTS = {
    # class: batch construction
    "tokenization drops the first completion token": ("loss", _drop_first_completion_token),
    "collator's completion mask one token late": (
        "loss",
        (
            COLLATOR,
            "torch_call",
            '[[0] * len(example["prompt_ids"]) + [1] * len(example["chosen_ids"])',
            '[[0] * (len(example["prompt_ids"]) + 1) + [1] * (len(example["chosen_ids"]) - 1)',
        ),
    ),
    "keep_end truncation keeps the start": (
        "paths",
        (COLLATOR, "torch_call", "sl = slice(-self.max_length, None)", "sl = slice(None, self.max_length)"),
    ),
    # class: metrics
    "reward accuracy counts ties as wins": (
        "paths",
        (DPO, "_compute_loss", "(chosen_rewards > rejected_rewards)", "(chosen_rewards >= rejected_rewards)"),
    ),
    "rejected log-probs misaligned by one pair": (
        "loss",
        (
            DPO,
            "_compute_loss",
            "chosen_logps, rejected_logps = logps.chunk(2, dim=0)",
            "chosen_logps, rejected_logps = logps.chunk(2, dim=0); rejected_logps = rejected_logps.roll(1)",
        ),
    ),
    # class: reference paths (on the fly; stored after the policy moved; a new eval set after training)
    "on-the-fly reference computed with the adapter on": (
        "loss",
        (
            DPO,
            "_compute_loss",
            'ref_model_unwrapped, adapter_name="ref" if "ref" in ref_model_unwrapped.peft_config else None',
            'ref_model_unwrapped, adapter_name="default"',
        ),
    ),
    "precomputed reference computed with the adapter on": (
        "paths",
        (DPO, "compute_ref_log_probs", "if self.ref_model is None and is_peft_model(self.model):", "if False:"),
    ),
    "reference of a new eval set after training computed with the adapter on": (
        "paths",
        (
            DPO,
            "compute_ref_log_probs",
            "if self.ref_model is None and is_peft_model(self.model):",
            "if self.ref_model is None and is_peft_model(self.model) and self.state.global_step == 0:",
        ),
    ),
    "reference of a new eval set after training read from the trained policy": (
        "paths-full",
        (
            DPO,
            "_precompute_ref_logps",
            "model = self.ref_model or self.model",
            "model = self.model if self.state.global_step else (self.ref_model or self.model)",
        ),
    ),
    # class: gradient accumulation
    "accumulated loss divided by one micro-batch too many": (
        "paths",
        (
            transformers.Trainer,
            "training_step",
            "loss = loss / self.current_gradient_accumulation_steps",
            "loss = loss / (self.current_gradient_accumulation_steps + 1)",
        ),
    ),
    # class: bounds (a 1% error must show in bfloat16 too, on a batch large enough for rounding to average out)
    "loss 1% too large, bfloat16": (
        "loss-bf16",
        (
            DPO,
            "_compute_loss",
            "loss += per_sequence_loss.mean() * loss_weight",
            "loss += per_sequence_loss.mean() * loss_weight * 1.01",
        ),
    ),
}


@pytest.fixture
def no_dataset_cache():
    datasets.disable_caching()
    yield
    datasets.enable_caching()


@pytest.mark.slow  # one cross-check run per planted bug; make test-fast leaves them to make test
@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_the_crosscheck_catches_each_planted_bug(mutant, tiny_sft_path, monkeypatch, no_dataset_cache):
    where, change = MUTANTS[mutant]
    if callable(change):
        change(monkeypatch)
    else:
        owner, name, old, new = change
        monkeypatch.setattr(owner, name, rewrite(owner, name, old, new))
    if where.startswith("paths"):
        rows = runner.training_checks("full" if where == "paths-full" else "lora")
        assert any(row.verdict == "MISMATCH" for row in rows), [(r.quantity, r.verdict) for r in rows]
    else:
        # bf16 rounds a token's log-prob by ~1e-2, so the loss of 8 pairs is certain to ~1%; 32 pairs halve that
        data = runner.CheckData(n_pairs=32 if where == "loss-bf16" else 8)
        dtype = "bfloat16" if where == "loss-bf16" else "float32"
        (result,) = runner.crosscheck(["sigmoid"], "lora", data, dtype=dtype)
        caught = [row.quantity for row in result.rows if row.verdict == "MISMATCH"]
        assert caught and "positive control: 1% off" not in caught, runner.render([result])  # seen, and can see
