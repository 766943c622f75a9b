"""The reference guard: a run whose policy does not start as its reference stops before the first step, with a
line naming the likely cause, in each form the reference takes; a correct reference passes, on the real batch."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from dpo_recipes.trainer.reference_logps import save_reference_logps
from dpo_recipes.training.reference_guard import ReferenceMismatch, check_reference
from dpo_recipes.worlds import embedded

from .conftest import tiny_lora, tiny_trainer


@pytest.fixture(scope="module")
def pairs(uncached_pairs):
    return uncached_pairs.select(range(12))


def _trainer(tmp_path, pairs, model_args=None, reference_logps=None, **settings):
    return tiny_trainer(tmp_path, pairs, model_args, reference_logps=reference_logps, **settings)


def _plant_column(trainer, shift: float) -> None:
    """Shift the stored reference log-probs of the first rows, as a file or cache from another run would."""
    data = trainer.train_dataset
    shifted = [value + (shift if i < 2 else 0.0) for i, value in enumerate(data["ref_chosen_logps"])]
    trainer.train_dataset = data.remove_columns("ref_chosen_logps").add_column("ref_chosen_logps", shifted)


def test_a_fresh_lora_adapter_passes_and_a_trained_one_is_stopped(tmp_path, pairs):
    trainer = _trainer(tmp_path, pairs)
    result = check_reference(trainer)
    assert result["passed"] and result["form"] == "policy with its adapter disabled"
    assert result["sequences"] == 8 and result["max_abs_logp_difference"] <= result["bound_at_worst"]
    with torch.no_grad():  # the adapter of a run that trained before: B is no longer 0
        for name, parameter in trainer.model.named_parameters():
            if "lora_B" in name:
                parameter.add_(0.05)
    with pytest.raises(ReferenceMismatch, match="adapter disabled.*adapter already trained"):
        check_reference(trainer)


def test_a_separate_reference_must_be_the_starting_policy(tmp_path, pairs):
    full = tiny_lora(use_peft=False)
    trainer = _trainer(tmp_path, pairs, full)
    assert check_reference(trainer)["form"] == "separate reference model"
    wrong = AutoModelForCausalLM.from_pretrained(embedded.resolve(embedded.TINY_BASE))  # the base, not the SFT model
    trainer.ref_model.load_state_dict(wrong.state_dict())
    with pytest.raises(ReferenceMismatch, match="separate reference model.*wrong reference model"):
        check_reference(trainer)


def test_precomputed_reference_logps_must_be_this_policys(tmp_path, pairs):
    trainer = _trainer(tmp_path, pairs, precompute_ref_log_probs=True)
    assert check_reference(trainer)["passed"]
    _plant_column(trainer, 0.5)
    with pytest.raises(ReferenceMismatch, match="precomputed reference log-probs.*stale"):
        check_reference(trainer)


def test_a_reference_file_from_another_run_is_stopped(tmp_path, pairs):
    source = _trainer(tmp_path / "source", pairs, precompute_ref_log_probs=True)
    path = save_reference_logps(source, tmp_path / "reference.safetensors")
    reader = _trainer(tmp_path / "reader", pairs, reference_logps=str(path))
    assert check_reference(reader, reference_file=str(path))["form"] == "reference log-probs file"
    _plant_column(reader, -0.3)  # numbers that are not this policy's (a file made for other weights)
    with pytest.raises(ReferenceMismatch, match="file was computed for another model"):
        check_reference(reader, reference_file=str(path))


def test_a_rounding_sized_difference_passes_and_the_bound_is_tight(tmp_path, pairs):
    trainer = _trainer(tmp_path, pairs, precompute_ref_log_probs=True)
    bound = check_reference(trainer)["bound_at_worst"]
    assert 0 < bound < 0.05  # float32 on a tiny model: far below any real difference of references
    _plant_column(trainer, bound / 100)
    assert check_reference(trainer)["passed"]
    _plant_column(trainer, 50 * bound)
    with pytest.raises(ReferenceMismatch):
        check_reference(trainer)
