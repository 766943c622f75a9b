"""The data doctor: what a preference dataset will really give DPO, before a GPU-hour is spent on it.

It runs a recipe with on_bad_row=skip (by default), so every row is accounted for, then checks the kept pairs:
duplicates, length bias (medians and quartiles: a mean of ratios is ruled by a few outliers), label leaks
(`dpo_recipes.data.leaks`) and the shape of conversations (roles that do not alternate, empty turns, transcript
markers inside a message). With a tokenizer it tokenizes them the way TRL 1.16's DPOTrainer does (chat template
for conversational rows, EOS appended to standard completions) and counts what TRL would truncate, silently
drop, or mis-split.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field

from dpo_recipes.data.leaks import Leak, find_leaks
from dpo_recipes.data.loading import load_preference_splits
from dpo_recipes.data.messages import visible
from dpo_recipes.data.registry import IDENTICAL, SAME_TEXT, get_recipe
from dpo_recipes.data.special_tokens import injected_token, special_strings

TURN_MARKERS = ("\n\nHuman:", "\n\nAssistant:")


@dataclass
class TokenChecks:
    max_length: int | None
    truncated: int = 0  # prompt + chosen or prompt + rejected longer than max_length
    completion_vanishes: int = 0  # the prompt alone fills max_length: TRL drops the pair without a word
    prompt_not_prefix: int = 0  # tokenized prompt is not a prefix of tokenized prompt + completion
    double_bos: int = 0
    double_eos: int = 0
    special_tokens_in_text: int = 0  # pairs whose text holds a special token (chat-template injection)
    chars_per_token: float = 0.0  # of the completions: how finely this tokenizer splits this text


@dataclass
class TurnChecks:
    """The shape of conversational prompts: what chat templates that require alternating roles reject."""

    not_alternating: int = 0  # prompts whose user/assistant turns do not alternate (after an optional system turn)
    empty_turns: int = 0  # pairs with an empty or invisible message
    markers_in_messages: int = 0  # pairs whose messages hold "\n\nHuman:"/"\n\nAssistant:" (merged turns)


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
    length_ratio_quartiles: tuple[float, float, float]  # of len(chosen) / len(rejected): (25%, median, 75%)
    median_lengths: tuple[float, float]  # (chosen, rejected)
    length_unit: str
    leaks: list[Leak] = field(default_factory=list)
    turns: TurnChecks | None = None  # conversational rows only
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
            f"  length bias ({self.length_unit}): chosen longer in {self.chosen_longer_share:.1%} of pairs; "
            f"median length chosen {self.median_lengths[0]:g}, rejected {self.median_lengths[1]:g}; length ratio "
            "chosen/rejected quartiles " + " / ".join(f"{q:.3f}" for q in self.length_ratio_quartiles),
        ]
        lines += [f"  LABEL LEAK {leak.describe()}" for leak in self.leaks] or ["  label leaks: none found"]
        if self.turns:
            lines.append(
                f"  conversations: roles not alternating {self.turns.not_alternating}, empty turns "
                f"{self.turns.empty_turns}, turn markers inside a message {self.turns.markers_in_messages}"
            )
        if self.tokens:
            t, kept = self.tokens, max(self.rows_kept, 1)
            lines += [
                f"  max_length {t.max_length}: truncated {t.truncated} ({t.truncated / kept:.1%}), "
                f"completion vanishes {t.completion_vanishes} ({t.completion_vanishes / kept:.1%}; TRL drops these)",
                f"  tokenized prompt not a prefix of prompt+completion: {t.prompt_not_prefix}",
                f"  double BOS: {t.double_bos}, double EOS: {t.double_eos}",
                f"  pairs whose text holds a special token (a forged turn or an early end): {t.special_tokens_in_text}",
                f"  characters per token (completions): {t.chars_per_token:.2f}",
            ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(m["content"] for m in value)


def _completion_lengths(row: dict, tokenizer) -> tuple[int, int]:
    """Chosen and rejected lengths in tokens (completion only: a shared prompt would dilute the ratio), or
    in characters without a tokenizer."""
    if tokenizer is None:
        return len(_text(row["chosen"])), len(_text(row["rejected"]))
    from dpo_recipes.core.scoring import trl_token_ids  # torch: only the tokenizer checks need it

    chosen, rejected = (trl_token_ids(tokenizer, row["prompt"], row[side]) for side in ("chosen", "rejected"))
    return len(chosen[1]) - len(chosen[0]), len(rejected[1]) - len(rejected[0])


def _completion_text(value) -> str:
    """A completion's text: the string, or the final message's content."""
    return value if isinstance(value, str) else value[-1]["content"]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return (values[0],) * 3 if values else (0.0, 0.0, 0.0)
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def medians(lengths: list[tuple[int, int]]) -> tuple[float, float]:
    if not lengths:
        return 0.0, 0.0
    return statistics.median(c for c, _ in lengths), statistics.median(r for _, r in lengths)


def _check_turns(rows: list[dict]) -> TurnChecks:
    checks = TurnChecks()
    for row in rows:
        prompt = [m for m in row["prompt"] if m["role"] != "system"]
        checks.not_alternating += any(m["role"] != ("user", "assistant")[i % 2] for i, m in enumerate(prompt))
        messages = row["prompt"] + row["chosen"] + row["rejected"]
        checks.empty_turns += any(not visible(m["content"]) for m in messages if m["role"] != "system")
        checks.markers_in_messages += any(marker in m["content"] for m in messages for marker in TURN_MARKERS)
    return checks


def _check_tokens(rows: list[dict], tokenizer, max_length: int | None) -> TokenChecks:
    from dpo_recipes.core.scoring import trl_token_ids

    checks = TokenChecks(max_length)
    characters = tokens = 0
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    strings = special_strings(tokenizer)
    for row in rows:
        checks.special_tokens_in_text += injected_token(row, strings) is not None
        sequences = [trl_token_ids(tokenizer, row["prompt"], row[side]) for side in ("chosen", "rejected")]
        prompt_len = len(sequences[0][0])
        characters += sum(len(_completion_text(row[side])) for side in ("chosen", "rejected"))
        tokens += sum(len(full) - len(p) for p, full in sequences)
        checks.prompt_not_prefix += any(full[: len(p)] != p for p, full in sequences)
        checks.double_bos += any(bos is not None and full[:2] == [bos, bos] for _, full in sequences)
        checks.double_eos += any(
            eos is not None and [eos, eos] == full[i : i + 2] for _, full in sequences for i in range(len(full) - 1)
        )
        if max_length is not None:
            checks.truncated += any(len(full) > max_length for _, full in sequences)
            checks.completion_vanishes += prompt_len >= max_length
    checks.chars_per_token = characters / max(tokens, 1)
    return checks


def diagnose(
    dataset: str,
    recipe: str,
    split: str | None = None,
    fmt: str = "conversational",
    tokenizer=None,
    max_length: int | None = None,
    max_rows: int | None = None,
    on_bad_row: str = "skip",
    **options,
) -> DoctorReport:
    """Run the doctor on one split of ``dataset`` (hub id, path or embedded name) read through ``recipe``."""
    split = split or get_recipe(recipe).splits[0]
    prepared = load_preference_splits(
        dataset, recipe, {"doctor": split}, max_rows={"doctor": max_rows}, fmt=fmt, on_bad_row=on_bad_row, **options
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
        length_ratio_quartiles=quartiles([c / max(r, 1) for c, r in lengths]),
        median_lengths=tuple(
            statistics.median(side) if rows else 0.0 for side in ([c for c, _ in lengths], [r for _, r in lengths])
        ),
        length_unit="tokens" if tokenizer is not None else "characters",
        leaks=find_leaks(*_completions(rows, tokenizer)),
        turns=_check_turns(rows) if fmt == "conversational" else None,
        tokens=_check_tokens(rows, tokenizer, max_length) if tokenizer is not None else None,
    )
    report.notes += _notes(report, tokenizer, max_length)
    return report


def _completions(rows: list[dict], tokenizer) -> tuple[list[str], list[str], dict]:
    """Chosen and rejected texts, and the tokenizer-dependent leak features."""
    chosen = [_completion_text(row["chosen"]) for row in rows]
    rejected = [_completion_text(row["rejected"]) for row in rows]
    eos = getattr(tokenizer, "eos_token", None)
    extra = {"ends with the EOS token": lambda text: text.rstrip().endswith(eos)} if eos else {}
    return chosen, rejected, extra


def _notes(report: DoctorReport, tokenizer, max_length: int | None) -> list[str]:
    notes = []
    if tokenizer is None and max_length is not None:
        notes.append("max_length needs --tokenizer: truncation was not checked")
    limit = getattr(tokenizer, "model_max_length", None)
    if max_length is not None and limit is not None and max_length > limit:
        notes.append(
            f"max_length {max_length} exceeds the tokenizer's model_max_length {limit}: the model was not "
            "trained on sequences this long"
        )
    if report.tokens and 0 < report.tokens.chars_per_token < 2.5:
        notes.append(
            f"this tokenizer averages {report.tokens.chars_per_token:.2f} characters per token here; "
            "a production tokenizer on English text averages about 4, so token lengths and truncation "
            "counts here overstate what a run with that tokenizer would see"
        )
    return notes
