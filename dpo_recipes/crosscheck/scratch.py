"""The from-scratch side's forward passes and TRL's logged metrics, on the batch built in `batches`.

Every sequence goes through the model alone, unpadded, so nothing about padding or the batch layout can make the
two sides agree by accident; the per-token views are then laid side by side (chosen sequences first, as TRL
does), padded with zeros that the completion mask leaves out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dpo_recipes.core.scoring import TokenLogps, token_logps
from dpo_recipes.crosscheck.batches import OwnBatch
from dpo_recipes.trainer.packing import packed_inputs, unpack


def _pad(parts: list[Tensor], width: int, value=0) -> Tensor:
    return torch.cat([torch.nn.functional.pad(part, (0, width - part.shape[1]), value=value) for part in parts])


def sequence_token_logps(model, own: OwnBatch, details: bool = False) -> TokenLogps:
    """`token_logps` of every sequence of ``own``, each in its own forward pass."""
    device = next(model.parameters()).device
    parts = []
    for sequence in own.sequences:
        ids = torch.tensor([sequence.ids], device=device)
        completion = torch.tensor([sequence.completion], device=device)
        parts.append(token_logps(model, ids, torch.ones_like(ids), completion, details=details, float64_head=True))
    width = max(part.logps.shape[1] for part in parts)
    stacked = {
        name: _pad([getattr(part, name) for part in parts], width, False if name == "is_top1" else 0)
        for name in ("logps", "mask", "log_sum_sq_probs", *(DETAILS if details else ()))
    }
    return TokenLogps(**stacked)


DETAILS = ("entropy", "mean_logits", "is_top1", "top1_margin", "rounding", "max_logit")


LAYOUTS = {"padded as TRL": (1, 0), "chosen and rejected apart": (2, 0), "padded 8 wider": (1, 8), "one row": (0, 0)}


def batched_token_logps(model, own: OwnBatch, details: bool = False, parts: int = 1, extra: int = 0) -> TokenLogps:
    """`token_logps` of the same sequences in other layouts: right-padded as TRL lays them out (one forward for
    the batch), in ``parts`` forwards (2: chosen and rejected sequences apart), ``extra`` padding columns wider.
    Each layout rounds differently; the differences are the forward's rounding noise (`tolerances`). ``parts=0``
    packs every sequence into one row instead (`packed_token_logps`)."""
    if parts == 0:
        return packed_token_logps(model, own, details)
    device = next(model.parameters()).device
    batch = own.padded(pad_token_id=0)
    width = batch["input_ids"].shape[1] + extra
    batch = {key: torch.nn.functional.pad(value, (0, extra)).to(device) for key, value in batch.items()}
    size = -(-batch["input_ids"].shape[0] // parts)
    pieces = [
        token_logps(
            model,
            **{key: value[start : start + size] for key, value in batch.items()},
            details=details,
            float64_head=True,
        )
        for start in range(0, batch["input_ids"].shape[0], size)
    ]
    names = ("logps", "mask", "log_sum_sq_probs", *(DETAILS if details else ()))
    joined = {name: torch.cat([getattr(piece, name) for piece in pieces]) for name in names}
    return TokenLogps(**{name: value[:, : width - 1 - extra] for name, value in joined.items()})


def packed_token_logps(model, own: OwnBatch, details: bool = False) -> TokenLogps:
    """`token_logps` of the sequences packed into one row, positions restarting at each (as ``pack_sequences``
    runs them, `dpo_recipes.trainer.packing`), laid back out per sequence."""
    device = next(model.parameters()).device
    batch = own.padded(pad_token_id=0)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    packed = packed_inputs(batch["input_ids"], batch["attention_mask"], labels, row_tokens=10**6)
    places, lengths, width = packed["layout"]
    ids = packed["input_ids"].to(device)
    row = token_logps(
        model, ids, None, torch.ones_like(ids), details, True, position_ids=packed["position_ids"].to(device)
    )
    names = ("logps", "log_sum_sq_probs", *(DETAILS if details else ()))
    laid_out = {name: unpack(getattr(row, name), places, lengths, width) for name in names}
    return TokenLogps(**laid_out, mask=batch["completion_mask"][:, 1:].double().to(device))


def token_metrics(tokens: TokenLogps, own: OwnBatch, tokens_before: int) -> dict[str, float]:
    """TRL's logged token metrics, from their definitions: entropy over all completion tokens; mean logit over
    chosen and over rejected completion tokens; the share of chosen completion tokens that are the model's top
    choice; and the running count of attended tokens."""
    mask = tokens.mask
    chosen_mask, rejected_mask = tokens.halves(mask)
    chosen_logits, rejected_logits = tokens.halves(tokens.mean_logits)
    chosen_top1, _ = tokens.halves(tokens.is_top1.double())
    return {
        "entropy": float((tokens.entropy * mask).sum() / mask.sum()),
        "logits/chosen": float((chosen_logits * chosen_mask).sum() / chosen_mask.sum()),
        "logits/rejected": float((rejected_logits * rejected_mask).sum() / rejected_mask.sum()),
        "mean_token_accuracy": float((chosen_top1 * chosen_mask).sum() / chosen_mask.sum()),
        "num_tokens": float(tokens_before + sum(len(sequence.ids) for sequence in own.sequences)),
    }
