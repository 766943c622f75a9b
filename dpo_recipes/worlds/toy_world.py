"""The toy preference world: the offline analogue of the DPO paper's IMDb experiment.

In the paper's IMDb task a sentiment classifier is the ground-truth reward. Here the ground truth is a
function written in code, so every evaluation is exact and reproducible offline.

A prompt asks for an opinion about a subject ("What do you think of the silver fox?"). A response states
an opinion with graded opinion words ("The silver fox is brilliant and dull."). The hidden reward is

    reward = topicality + sentiment
    topicality = +1 if the response names the prompt's subject and no other subject, else -1
    sentiment  = mean value of the opinion words in the response (each in -2..+2); -2 if there are none

Nothing in the prompt says that positive, on-topic answers are preferred: the preference is learnable only
from the pairs. Sentiment is a *mean*, so longer answers earn nothing by length alone. An answer with no
opinion at all is unhelpful and scores as the worst opinion: when that case scored 0, a DPO policy found it
("The yellow dragon is.") and won ties by saying nothing, a reward hack of the ground truth itself.

Pairs are binarized the way UltraFeedback's were: of four responses to a prompt, the best is chosen and a
random one of the other three rejected (ties between them are left in, as in the real data, for the recipe
to drop and count). The world emits data in the raw schema of HuggingFaceH4/ultrafeedback_binarized:
``prompt``, ``prompt_id``, ``chosen``/``rejected``/``messages`` as message lists, ``score_chosen``/
``score_rejected`` on a 1..10 scale, and splits ``train_prefs``/``test_prefs``/``train_sft``/``test_sft``.
Recipes therefore read it through the same dataset recipe as the real UltraFeedback. The SFT splits hold
*unbiased* demonstrations (the analogue of Zephyr's UltraChat SFT data), so the SFT reference is neutral and
DPO has something to learn.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.schemas import ultrafeedback_binarized_row

COLORS = ("red", "blue", "green", "yellow", "black", "white", "silver", "golden")
NOUNS = (
    "fox",
    "whale",
    "lamp",
    "garden",
    "river",
    "castle",
    "robot",
    "violin",
    "bicycle",
    "mountain",
    "teapot",
    "dragon",
    "market",
    "library",
    "forest",
    "train",
)
SUBJECTS = tuple(f"{color} {noun}" for color in COLORS for noun in NOUNS)

OPINION_WORDS: dict[str, int] = {
    **dict.fromkeys(("wonderful", "brilliant", "delightful", "superb", "marvelous"), 2),
    **dict.fromkeys(("good", "pleasant", "nice", "charming", "lovely"), 1),
    **dict.fromkeys(("ordinary", "average", "plain", "typical", "modest"), 0),
    **dict.fromkeys(("dull", "messy", "clumsy", "boring", "tiresome"), -1),
    **dict.fromkeys(("awful", "dreadful", "horrible", "terrible", "miserable"), -2),
}

PROMPT_TEMPLATES = (
    "Tell me about the {subject}.",
    "What do you think of the {subject}?",
    "Describe the {subject}.",
    "How would you describe the {subject}?",
    "Give me your impression of the {subject}.",
    "Share your thoughts on the {subject}.",
    "What is your opinion of the {subject}?",
    "Can you review the {subject}?",
)
# Each template's slots: the subject, then one or more opinion words.
OPINION_TEMPLATES = (
    "The {subject} is {0}.",
    "The {subject} is {0} and {1}.",
    "I think the {subject} is {0}.",
    "In my view the {subject} is {0}, {1} and {2}.",
    "Honestly, the {subject} seems {0}.",
)
NO_OPINION_RESPONSES = ("I have no opinion about that.", "I cannot say.")

MIN_REWARD, MAX_REWARD = -3.0, 3.0
NO_OPINION = -2.0  # the sentiment of an answer that gives none
_WORD = re.compile(r"[a-z]+")
_SUBJECT = re.compile(r"\b(" + "|".join(COLORS) + r") (" + "|".join(NOUNS) + r")\b")


def subjects_in(text: str) -> list[str]:
    """All subjects named in ``text``, in order."""
    return [" ".join(match) for match in _SUBJECT.findall(text.lower())]


def reward(prompt: str, response: str) -> float:
    """The ground-truth reward of ``response`` to ``prompt`` (see the module docstring), in [-3, 3]."""
    asked = subjects_in(prompt)
    named = set(subjects_in(response))
    on_topic = bool(asked) and named == {asked[-1]}
    values = [OPINION_WORDS[word] for word in _WORD.findall(response.lower()) if word in OPINION_WORDS]
    sentiment = sum(values) / len(values) if values else NO_OPINION
    return (1.0 if on_topic else -1.0) + sentiment


def reward_to_score(value: float) -> float:
    """Map a reward in [-3, 3] onto UltraFeedback's 1..10 score scale."""
    return round(1.0 + 9.0 * (value - MIN_REWARD) / (MAX_REWARD - MIN_REWARD), 4)


def is_test_subject(subject: str) -> bool:
    """One subject in five is held out: test prompts name subjects that training never shows."""
    return int(hashlib.sha256(subject.encode()).hexdigest(), 16) % 5 == 0


@dataclass(frozen=True)
class WorldConfig:
    """How much data the world generates, and from which seed."""

    seed: int = 0
    train_pairs: int = 2000
    test_pairs: int = 300
    train_demonstrations: int = 3000
    test_demonstrations: int = 200
    candidates: int = 4  # responses per prompt before binarization, as in UltraFeedback
    off_topic_rate: float = 0.15
    no_opinion_rate: float = 0.1


class ToyWorld:
    """Deterministic generator of prompts, responses and preference pairs (same seed, same data)."""

    def __init__(self, config: WorldConfig = WorldConfig()):
        self.config = config
        self.train_subjects = [s for s in SUBJECTS if not is_test_subject(s)]
        self.test_subjects = [s for s in SUBJECTS if is_test_subject(s)]

    def prompts(self, rng: random.Random, subjects: list[str], count: int) -> list[str]:
        """``count`` prompts cycling through a seeded shuffle of every (template, subject) combination."""
        combos = [template.format(subject=s) for template in PROMPT_TEMPLATES for s in subjects]
        rng.shuffle(combos)
        return [combos[i % len(combos)] for i in range(count)]

    def response(self, rng: random.Random, prompt: str) -> str:
        """A demonstration drawn independently of its reward: the behaviour of an unaligned model."""
        draw = rng.random()
        if draw < self.config.no_opinion_rate:
            return rng.choice(NO_OPINION_RESPONSES)
        subject = subjects_in(prompt)[-1]
        if draw < self.config.no_opinion_rate + self.config.off_topic_rate:
            subject = rng.choice([s for s in SUBJECTS if s != subject])
        template = rng.choice(OPINION_TEMPLATES)
        words = rng.choices(list(OPINION_WORDS), k=template.count("{") - 1)
        return template.format(*words, subject=subject)

    def split(self, name: str) -> list[dict]:
        """Rows of one split in the ultrafeedback_binarized schema."""
        sizes = {
            "train_prefs": self.config.train_pairs,
            "test_prefs": self.config.test_pairs,
            "train_sft": self.config.train_demonstrations,
            "test_sft": self.config.test_demonstrations,
        }
        if name not in sizes:
            raise ConfigError(f"toy world has no split {name!r}; splits: {sorted(sizes)}")
        rng = random.Random(f"{self.config.seed}/{name}")
        subjects = self.test_subjects if name.startswith("test") else self.train_subjects
        rows = []
        for index, prompt in enumerate(self.prompts(rng, subjects, sizes[name])):
            if name.endswith("_sft"):  # one demonstration, as in UltraChat-style SFT data
                chosen = rejected = self.response(rng, prompt)
            else:
                chosen, rejected = self.binarize(rng, prompt)
            rows.append(_row(f"{name}-{index}", prompt, chosen=chosen, rejected=rejected))
        return rows

    def binarize(self, rng: random.Random, prompt: str) -> tuple[str, str]:
        """UltraFeedback's binarization: of ``candidates`` responses, the best is chosen, a random other rejected."""
        candidates = [self.response(rng, prompt) for _ in range(self.config.candidates)]
        best = max(range(len(candidates)), key=lambda i: reward(prompt, candidates[i]))
        rejected = rng.choice([c for i, c in enumerate(candidates) if i != best])
        return candidates[best], rejected

    def splits(self) -> dict[str, list[dict]]:
        return {name: self.split(name) for name in ("train_prefs", "test_prefs", "train_sft", "test_sft")}

    def corpus(self) -> list[str]:
        """Text covering every subject, template and opinion word, for training the tokenizer."""
        words = list(OPINION_WORDS)
        lines = list(NO_OPINION_RESPONSES)
        for i, subject in enumerate(SUBJECTS):
            lines += [template.format(subject=subject) for template in PROMPT_TEMPLATES]
            for j, template in enumerate(OPINION_TEMPLATES):
                start = (i + j) % len(words)
                lines.append(template.format(*(words * 2)[start : start + 3], subject=subject))
        return lines


def _row(prompt_id: str, prompt: str, chosen: str, rejected: str) -> dict:
    return ultrafeedback_binarized_row(
        prompt,
        chosen,
        rejected,
        reward_to_score(reward(prompt, chosen)),
        reward_to_score(reward(prompt, rejected)),
        prompt_key=prompt_id,
    )
