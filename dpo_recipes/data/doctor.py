"""The data doctor: what a preference dataset will really give DPO, before a GPU-hour is spent on it.

It runs a recipe with on_bad_row=skip, so every row is accounted for, then checks the kept pairs. With a
tokenizer it tokenizes them the way TRL 1.16's DPOTrainer does (chat template for conversational rows,
EOS appended to standard completions) and counts what TRL would truncate, silently drop, or mis-split.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from dpo_recipes.data.loading import load_preference_splits
from dpo_recipes.data.registry import IDENTICAL, SAME_TEXT, get_recipe
from dpo_recipes.data.special_tokens import injected_token, special_strings
from dpo_recipes.scoring import trl_token_ids


@dataclass
class TokenChecks:
    max_length: int | None
    truncated: int = 0  # prompt + chosen or prompt + rejected longer than max_length
    completion_vanishes: int = 0  # the prompt alone fills max_length: TRL drops the pair without a word
    prompt_not_prefix: int = 0  # tokenized prompt is not a prefix of tokenized prompt + completion
    double_bos: int = 0
    double_eos: int = 0
    special_tokens_in_text: int = 0  # pairs whose text holds a special token (chat-template injection)


@dataclass
class DoctorReport:
    dataset: str
    recipe: str
    split: str
    fmt: str
    rows_read: int
    rows_kept: int
    dropped: dict[str, int]
    identical_pairs: int  # chosen == rejected: no preference signal
    duplicate_pairs: int  # the same (prompt, chosen, rejected) again
    chosen_longer_share: float  # DPO is known to learn length; 0.5 means no length bias
    mean_length_ratio: float  # mean of len(chosen) / len(rejected)
    length_unit: str
    tokens: TokenChecks | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        lines = [
            f"Data doctor: {self.dataset} [{self.split}] via recipe {self.recipe} ({self.fmt})",
            f"  rows read {self.rows_read}, kept {self.rows_kept}, dropped {self.rows_read - self.rows_kept}",
        ]
        lines += [f"    dropped {count:>6}  {reason}" for reason, count in sorted(self.dropped.items())]
        lines += [
            f"  chosen == rejected: {self.identical_pairs}",
            f"  duplicate pairs: {self.duplicate_pairs}",
            f"  length bias ({self.length_unit}): chosen longer in {self.chosen_longer_share:.1%} of pairs, "
            f"mean length ratio chosen/rejected {self.mean_length_ratio:.3f}",
        ]
        if self.tokens:
            t, kept = self.tokens, max(self.rows_kept, 1)
            lines += [
                f"  max_length {t.max_length}: truncated {t.truncated} ({t.truncated / kept:.1%}), "
                f"completion vanishes {t.completion_vanishes} ({t.completion_vanishes / kept:.1%}; TRL drops these)",
                f"  tokenized prompt not a prefix of prompt+completion: {t.prompt_not_prefix}",
                f"  double BOS: {t.double_bos}, double EOS: {t.double_eos}",
                f"  pairs whose text holds a special token (a forged turn or an early end): {t.special_tokens_in_text}",
            ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(m["content"] for m in value)


def _completion_lengths(row: dict, tokenizer) -> tuple[int, int]:
    """Chosen and rejected lengths in tokens (completion only: a shared prompt would dilute the ratio), or
    in characters without a tokenizer."""
    if tokenizer is None:
        return len(_text(row["chosen"])), len(_text(row["rejected"]))
    chosen, rejected = (trl_token_ids(tokenizer, row["prompt"], row[side]) for side in ("chosen", "rejected"))
    return len(chosen[1]) - len(chosen[0]), len(rejected[1]) - len(rejected[0])


def _check_tokens(rows: list[dict], tokenizer, max_length: int | None) -> TokenChecks:
    checks = TokenChecks(max_length)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    strings = special_strings(tokenizer)
    for row in rows:
        checks.special_tokens_in_text += injected_token(row, strings) is not None
        sequences = [trl_token_ids(tokenizer, row["prompt"], row[side]) for side in ("chosen", "rejected")]
        prompt_len = len(sequences[0][0])
        checks.prompt_not_prefix += any(full[: len(p)] != p for p, full in sequences)
        checks.double_bos += any(bos is not None and full[:2] == [bos, bos] for _, full in sequences)
        checks.double_eos += any(
            eos is not None and [eos, eos] == full[i : i + 2] for _, full in sequences for i in range(len(full) - 1)
        )
        if max_length is not None:
            checks.truncated += any(len(full) > max_length for _, full in sequences)
            checks.completion_vanishes += prompt_len >= max_length
    return checks


def diagnose(
    dataset: str,
    recipe: str,
    split: str | None = None,
    fmt: str = "conversational",
    tokenizer=None,
    max_length: int | None = None,
    max_rows: int | None = None,
    **options,
) -> DoctorReport:
    """Run the doctor on one split of ``dataset`` (hub id, path or embedded name) read through ``recipe``."""
    split = split or get_recipe(recipe).splits[0]
    prepared = load_preference_splits(
        dataset, recipe, {"doctor": split}, max_rows={"doctor": max_rows}, fmt=fmt, on_bad_row="skip", **options
    )["doctor"]
    rows = prepared.dataset.to_list()
    keys = [json.dumps([row["prompt"], row["chosen"], row["rejected"]], sort_keys=True) for row in rows]
    lengths = [_completion_lengths(row, tokenizer) for row in rows]
    report = DoctorReport(
        dataset=dataset,
        recipe=recipe,
        split=split,
        fmt=fmt,
        rows_read=prepared.rows_read,
        rows_kept=len(rows),
        dropped=dict(prepared.dropped),
        identical_pairs=prepared.dropped.get(IDENTICAL, 0) + prepared.dropped.get(SAME_TEXT, 0),  # dropped, counted
        duplicate_pairs=sum(count - 1 for count in Counter(keys).values()),
        chosen_longer_share=sum(c > r for c, r in lengths) / len(rows) if rows else 0.0,
        mean_length_ratio=sum(c / max(r, 1) for c, r in lengths) / len(rows) if rows else 0.0,
        length_unit="tokens" if tokenizer is not None else "characters",
        tokens=_check_tokens(rows, tokenizer, max_length) if tokenizer is not None else None,
    )
    if tokenizer is None and max_length is not None:
        report.notes.append("max_length needs --tokenizer: truncation was not checked")
    return report
