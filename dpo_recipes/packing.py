"""Padding-free (packed) DPO on TRL 1.16, which disables its own ``padding_free`` for DPO.

TRL's collator, loss, log-probs and metrics stay as they are. Only the model's forward changes: the padded
batch TRL hands it (chosen sequences, then rejected, right-padded) is packed into one row of real tokens, with
``position_ids`` restarting at every sequence. transformers builds a block-causal mask from such position ids
(document masking: no token attends across a sequence boundary; flash-attention's varlen kernels read the same
information on a GPU), so each sequence is computed as if it were alone. The per-token outputs of TRL's fused LM
head (log-probs, entropy, mean logits, top-1 flags) are then laid back out in the padded shape TRL expects.
`dpo_recipes.crosscheck.paths.check_packing` verifies packed against padded for loss, metrics and gradients.

The saving is every padding token: on long-tailed lengths most of a padded batch is padding.
"""

from __future__ import annotations

import types

import torch


def _unpack(values: torch.Tensor | None, starts: list[int], lengths: list[int], width: int):
    """Per-token values of the packed row (1, L − 1) back to the padded layout (N, width)."""
    if values is None:
        return None
    rows = []
    for start, length in zip(starts, lengths, strict=True):
        row = values[0, start : start + length - 1]  # sequence tokens 1..n−1, predicted from positions 0..n−2
        rows.append(torch.nn.functional.pad(row, (0, width - row.shape[0])))
    return torch.stack(rows)


def packed_inputs(input_ids, attention_mask, labels, reset_positions: bool = True) -> dict:
    """One row of the real tokens of a right-padded batch, with ``position_ids`` restarting at every sequence.
    The first token of each sequence gets no label: in the packed row it would be predicted from the previous
    sequence's last token. ``reset_positions=False`` is the cross-check's negative control (no document mask)."""
    keep = attention_mask.bool()
    lengths = keep.sum(dim=1).tolist()
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    positions = [torch.arange(n, device=input_ids.device) for n in lengths]
    packed_labels = labels[keep].clone()
    packed_labels[starts] = -100
    position_ids = torch.cat(positions) if reset_positions else torch.arange(sum(lengths), device=input_ids.device)
    return {
        "input_ids": input_ids[keep].unsqueeze(0),
        "position_ids": position_ids.unsqueeze(0),
        "labels": packed_labels.unsqueeze(0),
        "layout": (starts, lengths, input_ids.shape[1] - 1),
    }


def pack_forward(model, reset_positions: bool = True) -> None:
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
        packed = packed_inputs(input_ids, attention_mask, labels, reset_positions)
        starts, lengths, width = packed.pop("layout")
        output = fused(**packed, fused_lm_head=True, **kwargs)
        fields = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1", "label_mask")
        for name in fields:
            setattr(output, name, _unpack(getattr(output, name), starts, lengths, width))
        return output

    model.forward = types.MethodType(forward, model)


def pack_trainer(trainer, reset_positions: bool = True) -> None:
    """Packed forwards for the policy and, where there is one, the separate reference model."""
    model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    pack_forward(model, reset_positions)
    if trainer.ref_model is not None:
        pack_forward(trainer.ref_model, reset_positions)
