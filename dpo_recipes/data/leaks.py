"""Label leaks: surface features of a completion that tell chosen from rejected without reading it.

If every rejected answer of a dataset starts with a space and no chosen answer does, one token gives the label
away, and DPO can lower its loss by learning that token instead of the preference. For each feature below, the
one-feature rule "the completion that has it is the chosen one" (or its opposite) is scored on every pair: a
pair where the two completions differ in the feature counts 1 if the rule is right, a pair where they agree
counts ½ (a guess). A rule right far more often than a guess is a leak.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_MARKDOWN = re.compile(r"(^|\n)\s*(#{1,6} |[-*+] |\d+\. |```)|\*\*|__|`[^`]+`")

FEATURES: dict[str, Callable[[str], bool]] = {
    "starts with whitespace": lambda text: text[:1].isspace(),
    "ends with whitespace": lambda text: text[-1:].isspace(),
    "ends with . ! or ?": lambda text: text.rstrip()[-1:] in (".", "!", "?"),
    "uses markdown": lambda text: _MARKDOWN.search(text) is not None,
    "contains a newline": lambda text: "\n" in text.strip(),
}
LEAK_ACCURACY = 0.75  # a one-feature rule right this often (a guess is right half the time) is reported
MIN_PAIRS = 8


@dataclass
class Leak:
    feature: str  # what the chosen completion has (or lacks) that the rejected one lacks (or has)
    accuracy: float  # of the one-feature rule over all pairs, ties counted ½
    coverage: float  # share of pairs whose completions differ in the feature

    def describe(self) -> str:
        return (
            f"{self.feature}: predicts chosen vs rejected with accuracy {self.accuracy:.1%} "
            f"(the completions differ in {self.coverage:.1%} of pairs)"
        )


def rule_accuracy(chosen: list, rejected: list) -> tuple[float, float]:
    """(accuracy of "the completion with the feature is chosen", share of pairs where the two differ), from
    per-pair feature values (booleans, or numbers where more means "has it more")."""
    differ = [(c, r) for c, r in zip(chosen, rejected, strict=True) if c != r]
    right = sum(c > r for c, r in differ)
    n = len(chosen)
    return (right + 0.5 * (n - len(differ))) / n, len(differ) / n


def find_leaks(chosen: list[str], rejected: list[str], extra: dict[str, Callable[[str], object]] = ()) -> list[Leak]:
    """Every feature (``FEATURES``, length, and ``extra`` ones such as "ends with EOS") whose rule, or its
    opposite, reaches ``LEAK_ACCURACY`` on at least ``MIN_PAIRS`` pairs."""
    if len(chosen) < MIN_PAIRS:
        return []
    features = {**FEATURES, "longer": len, **dict(extra)}
    leaks = []
    for name, feature in features.items():
        accuracy, coverage = rule_accuracy([feature(t) for t in chosen], [feature(t) for t in rejected])
        if accuracy >= LEAK_ACCURACY:
            leaks.append(Leak(f"chosen {name}", accuracy, coverage))
        elif 1 - accuracy >= LEAK_ACCURACY:
            leaks.append(Leak(f"rejected {name}", 1 - accuracy, coverage))
    return leaks
