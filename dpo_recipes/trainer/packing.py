"""Padding-free (packed) DPO on TRL 1.16, which disables its own ``padding_free`` for DPO.

TRL's collator, loss, log-probs and metrics stay as they are. Only the model's forward changes: the padded
batch TRL hands it (chosen sequences, then rejected, right-padded) is packed into rows of real tokens, with
``position_ids`` restarting at every sequence. transformers builds a block-causal mask from such position ids
(document masking: no token attends across a sequence boundary; flash-attention's varlen kernels read the same
information on a GPU), so each sequence is computed as if it were alone. The per-token outputs of TRL's fused LM
head (log-probs, entropy, mean logits, top-1 flags) are then laid back out in the padded shape TRL expects.
`dpo_recipes.crosscheck.paths.check_packing` verifies packed against padded for loss, metrics and gradients.

Rows hold at most ``row_tokens`` tokens (default: the padded batch's width, so no row is longer than the
longest sequence): attention over a row costs its length squared where no variable-length kernel skips the
masked blocks (sdpa on a CPU). The saving is every padding token: on long-tailed lengths most of a padded batch
is padding.
"""

from __future__ import annotations

import types

import torch

from dpo_recipes.core.errors import ConfigError


def unpack(values: torch.Tensor | None, places: list[tuple[int, int]], lengths: list[int], width: int):
    """Per-token values of the packed rows (R, W − 1) back to the padded layout (N, width)."""
    if values is None:
        return None
    rows = []
    for (row, start), length in zip(places, lengths, strict=True):
        part = values[row, start : start + length - 1]  # sequence tokens 1..n−1, predicted from positions 0..n−2
        rows.append(torch.nn.functional.pad(part, (0, width - part.shape[0])))
    return torch.stack(rows)


def bins(lengths: list[int], capacity: int) -> list[tuple[int, int]]:
    """(row, offset) of every sequence: first-fit decreasing into rows of ``capacity`` tokens.

    >>> bins([5, 3, 2, 4], 8)
    [(0, 0), (0, 5), (1, 4), (1, 0)]
    """
    used: list[int] = []
    places: list[tuple[int, int]] = [(0, 0)] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, filled in enumerate(used) if filled + lengths[i] <= capacity), len(used))
        if row == len(used):
            used.append(0)
        places[i] = (row, used[row])
        used[row] += lengths[i]
    return places


def packed_inputs(input_ids, attention_mask, labels, reset_positions: bool = True, row_tokens: int | None = None):
    """The real tokens of a right-padded batch, packed into as few rows of ``row_tokens`` (default: the batch's
    width) as hold them (first-fit decreasing), ``position_ids`` restarting at every sequence. The first token of
    each sequence gets no label: in a packed row it would be predicted from the previous sequence's last token.
    ``reset_positions=False`` is the cross-check's negative control (positions run on: no document mask)."""
    lengths = attention_mask.sum(dim=1).tolist()
    places = bins(lengths, max(input_ids.shape[1], row_tokens or 0))
    rows = max(row for row, _ in places) + 1
    filled = [sum(n for (r, _), n in zip(places, lengths, strict=True) if r == row) for row in range(rows)]
    width = max(filled)
    device = input_ids.device
    packed_ids = torch.zeros((rows, width), dtype=input_ids.dtype, device=device)  # the tail of a row: any id
    packed_labels = torch.full((rows, width), -100, dtype=labels.dtype, device=device)
    positions = torch.arange(width, device=device).repeat(rows, 1)  # the tail of a row: a document of its own
    for i, ((row, start), length) in enumerate(zip(places, lengths, strict=True)):
        packed_ids[row, start : start + length] = input_ids[i, :length]
        packed_labels[row, start + 1 : start + length] = labels[i, 1:length]
        if reset_positions:
            positions[row, start : start + length] = torch.arange(length, device=device)
    if reset_positions:
        for row, used in enumerate(filled):
            positions[row, used:] = torch.arange(width - used, device=device)
    return {
        "input_ids": packed_ids,
        "position_ids": positions,
        "labels": packed_labels,
        "layout": (places, lengths, input_ids.shape[1] - 1),
    }


def pack_forward(model, reset_positions: bool = True, row_tokens: int | None = None) -> None:
    """Make ``model`` (carrying TRL's fused LM head) pack every padded fused-head call into one row."""
    fused = model.forward

    def forward(self, *args, input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, **kwargs):
        if not fused_lm_head or attention_mask is None or labels is None or args:
            return fused(
                *args,
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=labels,
                fused_lm_head=fused_lm_head,
                **kwargs,
            )
        packed = packed_inputs(input_ids, attention_mask, labels, reset_positions, row_tokens)
        places, lengths, width = packed.pop("layout")
        output = fused(**packed, fused_lm_head=True, **kwargs)
        fields = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")
        for name in fields:
            setattr(output, name, unpack(getattr(output, name), places, lengths, width))
        return output

    model.forward = types.MethodType(forward, model)


def masks_documents(model) -> bool:
    """Whether ``model`` keeps packed sequences apart: the logits of a sequence packed after another equal its
    logits alone. A model whose attention ignores packed ``position_ids`` (an implementation that builds no
    document mask) would let every sequence attend to the ones before it in its row, and train on that."""
    device = next(model.parameters()).device
    first, second = torch.tensor([[3, 4, 5, 6, 7]], device=device), torch.tensor([[8, 9, 10]], device=device)
    alone = model(input_ids=second, use_cache=False).logits[0].float().detach()
    packed = (
        model(
            input_ids=torch.cat([first, second], dim=1),
            position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], device=device),
            use_cache=False,  # transformers separates packed sequences only without a cache, as in training
        )
        .logits[0, 5:]
        .float()
    )
    return bool(((packed - alone).abs().max() <= 0.05 * alone.abs().max().clamp(min=1)).item())


def pack_trainer(trainer, reset_positions: bool = True, row_tokens: int | None = None) -> None:
    """Packed forwards for the policy and, where there is one, the separate reference model; refused (a
    ConfigError) for a model that does not keep packed sequences apart."""
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    for packed in (model, trainer.ref_model) if trainer.ref_model is not None else (model,):
        if reset_positions and not masks_documents(packed):
            raise ConfigError(
                f"pack_sequences: {type(packed).__name__} does not separate sequences packed into one row (its "
                "attention ignores restarting position ids); train without pack_sequences"
            )
        pack_forward(packed, reset_positions, row_tokens)


class TokenBudgetBatches(torch.utils.data.Sampler):
    """Batches of pairs by real tokens instead of by count. Pairs are taken in a seeded random order and each goes
    to the first of the last ``window`` open batches it fits in (first fit over a window: a long pair no longer
    closes a half-empty batch, so batches end up near the budget); a pair is never split, and a pair over the
    budget is a batch of its own. The batches are made once, so every epoch has the same number of steps; each
    epoch visits them in a new seeded order (``set_epoch``, which accelerate calls)."""

    def __init__(self, tokens: list[int], budget: int, seed: int, window: int = 16):
        if budget < 1:
            raise ConfigError(f"max_tokens_per_batch {budget} must be ≥ 1")
        order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed)).tolist()
        self.batches: list[list[int]] = []
        used: list[int] = []  # tokens in each batch; the open ones are the last `window`
        for index in order:
            open_from = max(0, len(self.batches) - window)
            fits = (b for b in range(open_from, len(self.batches)) if used[b] + tokens[index] <= budget)
            target = next(fits, None)
            if target is None:
                self.batches.append([])
                used.append(0)
                target = len(self.batches) - 1
            self.batches[target].append(index)
            used[target] += tokens[index]
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter([self.batches[i] for i in torch.randperm(len(self.batches), generator=generator).tolist()])

    def __len__(self) -> int:
        return len(self.batches)


def pair_tokens(dataset) -> list[int]:
    """Real tokens of each tokenized pair as the model sees them: prompt + chosen and prompt + rejected."""
    columns = (dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"])
    return [2 * len(p) + len(c) + len(r) for p, c, r in zip(*columns, strict=True)]


def batch_by_tokens(trainer, budget: int) -> None:
    """The trainer's training batches are `TokenBudgetBatches` of its tokenized train set (TRL's collator)."""
    sampler = TokenBudgetBatches(pair_tokens(trainer.train_dataset), budget, trainer.args.seed)

    def get_train_dataloader(self):
        loader = torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory,
        )
        return self.accelerator.prepare(loader)

    trainer.get_train_dataloader = types.MethodType(get_train_dataloader, trainer)
