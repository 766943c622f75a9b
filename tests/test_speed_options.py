"""The recipe's speed options: TRL's reference log-prob cache is reused across runs and β, and invalidated by any
change that alters the log-probs; length grouping keeps pairs whole, pads less and is deterministic; packed
(padding-free) training follows the padded run step for step."""

import pytest
from transformers import set_seed
from trl import DPOConfig, DPOTrainer, ModelConfig

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.trainer.build import build_dpo_trainer
from dpo_recipes.trainer.packing import TokenBudgetBatches, masks_documents, pack_trainer, pair_tokens
from dpo_recipes.worlds import embedded

from .conftest import LINEAR_ADAMW, assert_same_updates, tiny_lora

MODEL = tiny_lora()


@pytest.fixture(scope="module")
def pairs(uncached_pairs):
    return uncached_pairs


def _trainer(tmp_path, pairs, pack_sequences=False, max_tokens_per_batch=None, **settings):
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        **settings,
    )
    return build_dpo_trainer(
        MODEL, args, pairs, pack_sequences=pack_sequences, max_tokens_per_batch=max_tokens_per_batch
    )


@pytest.fixture
def reference_forwards(monkeypatch):
    """How many batches TRL's precompute ran the reference on (0 when its cache answered)."""
    calls = []
    original = DPOTrainer.compute_ref_log_probs

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs", counted)
    return calls


def test_reference_logps_are_computed_once_and_reused_across_runs_and_betas(tmp_path, pairs, reference_forwards):
    first = _trainer(tmp_path, pairs, precompute_ref_log_probs=True, beta=0.1, max_length=96)
    computed = len(reference_forwards)
    assert computed > 0
    again = _trainer(tmp_path, pairs, precompute_ref_log_probs=True, beta=0.7, max_length=96)
    assert len(reference_forwards) == computed  # another β: read from the cache, no reference forward
    assert first.train_dataset["ref_chosen_logps"] == again.train_dataset["ref_chosen_logps"]

    _trainer(tmp_path, pairs, precompute_ref_log_probs=True, beta=0.1, max_length=60)  # another max_length: new key
    assert len(reference_forwards) == 2 * computed
    _trainer(tmp_path, pairs, precompute_ref_log_probs=True, max_length=96, ld_alpha=0.5)  # LD-DPO weights the ref
    assert len(reference_forwards) == 3 * computed


def test_other_reference_weights_invalidate_the_cache(tmp_path, pairs, reference_forwards):
    _trainer(tmp_path, pairs, precompute_ref_log_probs=True, max_length=90)
    computed = len(reference_forwards)
    _trainer(tmp_path, pairs, precompute_ref_log_probs=True, max_length=90)
    assert len(reference_forwards) == computed  # same reference: cached
    other = ModelConfig(**{**vars(MODEL), "model_name_or_path": embedded.TINY_BASE})  # same tokenizer, new weights
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        precompute_ref_log_probs=True,
        max_length=90,
    )
    build_dpo_trainer(other, args, pairs)
    assert len(reference_forwards) == 2 * computed


def _batches(trainer):
    """One epoch of input ids. transformers' LengthGroupedSampler draws from the global torch RNG, which a run
    seeds at start (Trainer.__init__'s set_seed): seeding here is what makes a rerun repeat its batches."""
    set_seed(0)
    return [batch["input_ids"] for batch in trainer.get_train_dataloader()]


def test_length_grouping_pads_less_keeps_pairs_whole_and_is_deterministic(tmp_path, pairs):
    random_order = _trainer(tmp_path, pairs)
    grouped = _trainer(tmp_path, pairs, train_sampling_strategy="group_by_length")

    def padding(trainer):
        masks = [batch["attention_mask"] for batch in trainer.get_train_dataloader()]
        return sum(int((m == 0).sum()) for m in masks) / sum(m.numel() for m in masks)

    assert padding(grouped) < padding(random_order)
    batches = _batches(grouped)
    assert all(batch.shape[0] == 16 for batch in batches)  # 8 pairs: 8 chosen rows then their 8 rejected rows
    assert sum(batch.shape[0] for batch in batches) == 2 * len(pairs)  # every pair once, both halves together
    again = _trainer(tmp_path, pairs, train_sampling_strategy="group_by_length")
    assert all(a.equal(b) for a, b in zip(batches, _batches(again), strict=True))


def test_packed_training_follows_the_padded_run_step_for_step(tmp_path, pairs):
    runs, optimizer = {}, dict(learning_rate=LINEAR_ADAMW["lr"], adam_epsilon=LINEAR_ADAMW["eps"])
    for packed in (False, True):
        set_seed(0)
        trainer = _trainer(
            tmp_path / str(packed),
            pairs,
            pack_sequences=packed,
            max_steps=4,
            logging_steps=1,
            precompute_ref_log_probs=True,
            weight_decay=LINEAR_ADAMW["weight_decay"],
            **optimizer,
        )
        start = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        runs[packed] = (losses, weights)
    # the losses: float32 sums over the same tokens in another layout (1e-6 of their size), 10× room
    assert len(runs[True][0]) == 4 and runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    assert_same_updates(start, runs[False][1], runs[True][1])


def test_token_budget_batches_hold_every_pair_once_within_the_budget(tmp_path, pairs):
    trainer = _trainer(tmp_path, pairs, pack_sequences=True, max_tokens_per_batch=700, max_steps=2)
    tokens = pair_tokens(trainer.train_dataset)
    sampler = TokenBudgetBatches(tokens, 700, seed=trainer.args.seed)  # the batches the trainer makes
    assert sorted(i for batch in sampler.batches for i in batch) == list(range(len(tokens)))  # each pair once
    assert all(sum(tokens[i] for i in batch) <= 700 or len(batch) == 1 for batch in sampler.batches)
    uneven = TokenBudgetBatches([300, 20, 20, 20, 20, 250, 40], budget=300, seed=0).batches
    assert {len(batch) for batch in uneven} != {1} and any(len(batch) > 2 for batch in uneven)  # by tokens
    long_tailed = [int(20 + 400 * (i * 0.618 % 1) ** 3) for i in range(200)]
    next_fit = TokenBudgetBatches(long_tailed, 800, seed=0, window=1).batches  # closes a batch on the first misfit
    first_fit = TokenBudgetBatches(long_tailed, 800, seed=0).batches
    assert len(first_fit) < len(next_fit)  # a long pair no longer closes a half-empty batch
    assert min(sum(long_tailed[i] for i in b) for b in first_fit[:-16]) > 700  # all but the last open ones ~full
    first = list(sampler)
    sampler.set_epoch(1)
    assert sorted(map(tuple, sampler)) == sorted(map(tuple, first)) and list(sampler) != first  # same batches
    assert TokenBudgetBatches(tokens, 700, seed=trainer.args.seed).batches == sampler.batches  # seeded
    loader = trainer.get_train_dataloader()
    assert len(loader) == len(sampler)
    assert all(int(batch["attention_mask"].sum()) <= 700 or batch["input_ids"].shape[0] == 2 for batch in loader)
    trainer.train()
    assert trainer.state.global_step == 2


def test_packing_is_refused_for_a_model_that_lets_packed_sequences_see_each_other(tmp_path, pairs):
    trainer = _trainer(tmp_path, pairs.select(range(8)))
    model = trainer.model.get_base_model()
    assert masks_documents(model)
    original = model.forward
    model.forward = lambda *args, position_ids=None, **kwargs: original(*args, **kwargs)  # ignores the positions
    assert not masks_documents(model)
    with pytest.raises(ConfigError, match="does not separate sequences packed into one row"):
        pack_trainer(trainer)
