"""Reference log-probs computed once, written to a checksummed file, and read by later runs: the run that reads
them trains exactly as the one that runs the reference; a file made for anything else is refused by name."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.trainer.build import build_dpo_trainer
from dpo_recipes.trainer.reference_logps import read_reference_logps, save_reference_logps
from dpo_recipes.worlds import embedded

from .conftest import tiny_lora, tiny_trainer

MODEL = tiny_lora()


@pytest.fixture(scope="module")
def pairs(uncached_pairs):
    return uncached_pairs.select(range(24))


def _trainer(tmp_path, pairs, reference_logps=None, eval_pairs=None, **settings):
    return tiny_trainer(tmp_path, pairs, MODEL, eval_pairs, reference_logps, **settings)


@pytest.fixture(scope="module")
def stored(tiny_sft_path, pairs, tmp_path_factory):
    """A file of the train and eval sets' reference log-probs, computed once by TRL's precompute."""
    folder = tmp_path_factory.mktemp("reference")
    trainer = _trainer(folder, pairs, eval_pairs=pairs.select(range(8)), precompute_ref_log_probs=True)
    return save_reference_logps(trainer, folder / "reference.safetensors"), trainer


def _losses(trainer) -> list[float]:
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def test_a_run_reading_the_file_trains_as_the_run_that_runs_the_reference(tmp_path, pairs, stored, monkeypatch):
    path, computed = stored
    tensors, key = read_reference_logps(path)
    assert tensors["train/ref_chosen_logps"].tolist() == pytest.approx(computed.train_dataset["ref_chosen_logps"])
    assert {"max_length", "truncation_mode", "ld_alpha", "compute_precision", "trl", "reference_weights"} < set(key)
    assert {"pairs:train", "pairs:eval"} < set(key)

    on_the_fly = _losses(_trainer(tmp_path / "a", pairs, eval_pairs=pairs.select(range(8))))
    forwards = []
    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", lambda *a, **k: forwards.append(1))  # must not run
    reader = _trainer(tmp_path / "b", pairs, reference_logps=str(path), eval_pairs=pairs.select(range(8)))
    assert reader.train_dataset["ref_rejected_logps"] == computed.train_dataset["ref_rejected_logps"]
    from_file = _losses(reader)
    assert len(from_file) == 3 and from_file == pytest.approx(on_the_fly, rel=1e-5)
    assert reader.evaluate()["eval_loss"] > 0 and forwards == []  # eval read its reference from the file too


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (dict(max_length=60), "max_length: run '60', file '96'"),
        (dict(truncation_mode="keep_end"), "truncation_mode: run 'keep_end', file 'keep_start'"),
        (dict(ld_alpha=0.5), "ld_alpha: run '0.5', file 'None'"),
        (dict(other_pairs=True), "pairs:train: run"),
        (dict(no_eval=True), "pairs:eval: run '(none)'"),
    ],
)
def test_a_file_made_for_another_run_is_refused_naming_what_differs(tmp_path, pairs, stored, change, named):
    change = dict(change)
    data = pairs.select(range(20)) if change.pop("other_pairs", False) else pairs
    eval_pairs = None if change.pop("no_eval", False) else pairs.select(range(8))
    with pytest.raises(ConfigError, match="computed for another run") as refused:
        _trainer(tmp_path, data, reference_logps=str(stored[0]), eval_pairs=eval_pairs, **change)
    assert named in str(refused.value)


def test_a_damaged_or_missing_file_is_refused(tmp_path, pairs, stored):
    damaged = tmp_path / "damaged.safetensors"
    content = bytearray(stored[0].read_bytes())
    content[-3] ^= 0xFF  # one byte of the last log-prob
    damaged.write_bytes(bytes(content))
    with pytest.raises(ConfigError, match="checksum mismatch"):
        read_reference_logps(damaged)
    with pytest.raises(ConfigError, match="not found"):
        read_reference_logps(tmp_path / "absent.safetensors")
    (tmp_path / "text.safetensors").write_text("not a tensor file")
    with pytest.raises(ConfigError, match="not a readable safetensors file"):
        read_reference_logps(tmp_path / "text.safetensors")


def test_other_reference_weights_are_refused(tmp_path, pairs, stored):
    base = embedded.resolve(embedded.TINY_SFT)
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3  # one weight of the reference differs
    model.save_pretrained(tmp_path / "other")
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp_path / "other")
    other = dataclasses.replace(MODEL, model_name_or_path=str(tmp_path / "other"))
    args = DPOConfig(
        output_dir=str(tmp_path), max_length=96, use_cpu=True, bf16=False, report_to="none", save_strategy="no"
    )
    with pytest.raises(ConfigError, match="reference_weights: run"):
        build_dpo_trainer(other, args, pairs, pairs.select(range(8)), reference_logps=str(stored[0]))


def test_non_finite_reference_log_probs_are_not_written(tmp_path, pairs, stored):
    trainer = stored[1]
    values = list(trainer.train_dataset["ref_rejected_logps"])
    values[5] = float("-inf")
    original = trainer.train_dataset
    trainer.train_dataset = original.remove_columns("ref_rejected_logps").add_column("ref_rejected_logps", values)
    try:
        with pytest.raises(ValueError, match="train/ref_rejected_logps: row 5 is -inf"):
            save_reference_logps(trainer, tmp_path / "bad.safetensors")
    finally:
        trainer.train_dataset = original
    assert not (tmp_path / "bad.safetensors").exists()


@pytest.mark.parametrize("fixed", ["reference_logps", "precompute_ref_log_probs"])
def test_a_fixed_reference_is_refused_with_a_reference_that_moves(tmp_path, pairs, stored, fixed):
    """A full fine-tune (TRL's sync_ref_model needs a separate reference model) with a moving reference."""
    full = dataclasses.replace(MODEL, use_peft=False)
    args = DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        sync_ref_model=True,
        precompute_ref_log_probs=fixed == "precompute_ref_log_probs",
    )
    reference = str(stored[0]) if fixed == "reference_logps" else None
    with pytest.raises(ConfigError, match="sync_ref_model updates the reference"):
        build_dpo_trainer(full, args, pairs, reference_logps=reference)
