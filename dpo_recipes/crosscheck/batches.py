"""Preference batches built from the raw pairs, independently of TRL's tokenization and collator.

The loss check is only as independent as its batch: a from-scratch loss computed on TRL's own ``input_ids`` and
masks agrees with TRL even when TRL built them wrongly (a completion token lost at the prompt boundary, an
off-by-one mask, truncation on the wrong side). So the token ids of every pair are made here from the text, with
the tokenizer and its chat template (`dpo_recipes.core.scoring.trl_token_ids`: the prompt rendered with the generation
prompt; the completion is the rest, EOS closing a standard completion), truncated to ``max_length`` by
``truncation_mode``, and a pair whose prompt alone fills ``max_length`` under ``keep_start`` is left out (it
would have no completion token). TRL's tokenized pairs and collated batch are compared with these, exactly.

One rule follows TRL's design rather than a paper: where the tokenized prompt is not a prefix of the tokenized
prompt + completion (tokens merging across the boundary, or a template that renders a lone prompt differently),
the completion starts where the two diverge. Such pairs are counted in the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.scoring import trl_token_ids


@dataclass
class Sequence:
    ids: list[int]
    completion: list[int]  # 1 for completion tokens


@dataclass
class OwnBatch:
    """The kept pairs' sequences: chosen ones first, then rejected ones, each unpadded."""

    kept: list[int]  # indices of the pairs that stay (in the order given)
    sequences: list[Sequence]
    not_prefix: int = 0  # pairs whose tokenized prompt is not a prefix of prompt + completion
    truncated: int = 0  # pairs cut at max_length
    notes: list[str] = field(default_factory=list)

    def padded(self, pad_token_id: int) -> dict[str, torch.Tensor]:
        """The batch as TRL's collator lays it out: right-padded ids, attention and completion masks."""
        width = max(len(s.ids) for s in self.sequences)
        batch = {
            "input_ids": torch.full((len(self.sequences), width), pad_token_id),
            "attention_mask": torch.zeros((len(self.sequences), width), dtype=torch.long),
            "completion_mask": torch.zeros((len(self.sequences), width), dtype=torch.long),
        }
        for i, s in enumerate(self.sequences):
            batch["input_ids"][i, : len(s.ids)] = torch.tensor(s.ids)
            batch["attention_mask"][i, : len(s.ids)] = 1
            batch["completion_mask"][i, : len(s.ids)] = torch.tensor(s.completion)
        return batch


def _split(tokenizer, row: dict) -> tuple[list[int], list[int], list[int], bool]:
    """(prompt ids, chosen completion ids, rejected completion ids, whether the prompt was a token prefix)."""
    prompt, chosen_full = trl_token_ids(tokenizer, row["prompt"], row["chosen"])
    _, rejected_full = trl_token_ids(tokenizer, row["prompt"], row["rejected"])
    cut = min(len(os.path.commonprefix([prompt, full])) for full in (chosen_full, rejected_full))
    return prompt[:cut], chosen_full[cut:], rejected_full[cut:], cut == len(prompt)


def _truncate(sequence: Sequence, max_length: int | None, mode: str) -> Sequence:
    if max_length is None or len(sequence.ids) <= max_length:
        return sequence
    part = slice(None, max_length) if mode == "keep_start" else slice(len(sequence.ids) - max_length, None)
    return Sequence(sequence.ids[part], sequence.completion[part])


def own_batch(tokenizer, rows: list[dict], max_length: int | None, truncation_mode: str = "keep_start") -> OwnBatch:
    """The batch TRL should build from ``rows`` (TRL-format preference rows), built here."""
    if truncation_mode not in ("keep_start", "keep_end"):
        raise ConfigError(f"truncation_mode {truncation_mode!r}: expected keep_start or keep_end")
    batch, chosen, rejected = OwnBatch([], []), [], []
    for index, row in enumerate(rows):
        prompt, chosen_ids, rejected_ids, prefix = _split(tokenizer, row)
        batch.not_prefix += not prefix
        if max_length is not None and truncation_mode == "keep_start" and len(prompt) >= max_length:
            continue  # no completion token would be left
        batch.kept.append(index)
        pair = [Sequence(prompt + ids, [0] * len(prompt) + [1] * len(ids)) for ids in (chosen_ids, rejected_ids)]
        batch.truncated += any(max_length is not None and len(s.ids) > max_length for s in pair)
        chosen.append(_truncate(pair[0], max_length, truncation_mode))
        rejected.append(_truncate(pair[1], max_length, truncation_mode))
    batch.sequences = chosen + rejected
    return batch


def batch_differences(trl_batch: dict[str, torch.Tensor], own: OwnBatch, pad_token_id: int) -> dict[str, int]:
    """How many sequences differ between TRL's collated batch and ours, per tensor (0 everywhere: identical).
    Padding beyond a sequence's attention mask is not compared (its token id has no effect)."""
    expected = own.padded(pad_token_id)
    if trl_batch["input_ids"].shape[0] != expected["input_ids"].shape[0]:
        return {"sequences": abs(trl_batch["input_ids"].shape[0] - expected["input_ids"].shape[0])}
    differences = {}
    for key in ("input_ids", "attention_mask", "completion_mask"):
        ours, theirs = expected[key], trl_batch[key].cpu()
        width = max(ours.shape[1], theirs.shape[1])
        ours, theirs = (torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (ours, theirs))
        if key == "input_ids":  # padding positions hold the pad id on one side, anything on the other
            ours, theirs = ours * expected_mask(expected, width), theirs * expected_mask(expected, width)
        differences[key] = int((ours != theirs).any(dim=1).sum())
    return differences


def expected_mask(expected: dict[str, torch.Tensor], width: int) -> torch.Tensor:
    mask = expected["attention_mask"]
    return torch.nn.functional.pad(mask, (0, width - mask.shape[1]))
