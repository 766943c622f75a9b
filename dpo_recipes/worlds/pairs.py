"""On-policy preference pairs: sample k answers per prompt from a model, score them with a judge, and keep the
best against the worst.

This is how DPO data is made when there is a judge but no labels (RLAIF; the sampling step of iterative and
online DPO): the pairs come from the model's own distribution, so DPO moves it within what it already says.
The pairs are written in the raw schema of HuggingFaceH4/ultrafeedback_binarized (``prompt``, ``prompt_id``,
``chosen``/``rejected``/``messages`` as message lists, ``score_chosen``/``score_rejected``), as
``data/{split}-00000-of-00001.parquet``, so the existing ``ultrafeedback_binarized`` recipe reads them, and
ties are dropped and counted there too. ``pairs.json`` beside the data records the settings and the account.

A built-in prompt generator (``builtin:reviews``) asks for one-sentence reviews of everyday things, the
offline analogue of the DPO paper's IMDb prompts; its held-out prompts are about *things* never used for
training pairs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_directory
from dpo_recipes.core.schemas import ultrafeedback_binarized_row

if TYPE_CHECKING:
    from dpo_recipes.worlds.judges import Judge, Messages

logger = logging.getLogger(__name__)

BUILTIN_REVIEWS = "builtin:reviews"
TEMPLATES = (
    "Write a one-sentence review of {}.",
    "In one sentence, what do you think of {}?",
    "Describe {} in a single sentence.",
    "Give me your one-sentence opinion of {}.",
)
QUALIFIERS = ("the new", "the old", "a cheap", "an expensive", "the local", "a popular")
THINGS = (
    "coffee shop",
    "pizza place",
    "hotel",
    "train station",
    "museum",
    "bookshop",
    "gym",
    "bakery",
    "cinema",
    "public library",
    "laptop",
    "phone",
    "bicycle",
    "car",
    "running shoes",
    "headphones",
    "sofa",
    "umbrella",
    "backpack",
    "camera",
    "theme park",
    "zoo",
    "beach resort",
    "ski lodge",
    "dentist",
    "hair salon",
    "supermarket",
    "farmers market",
    "airline",
    "bus service",
    "video game",
    "board game",
    "novel",
    "podcast",
    "comedy show",
    "music festival",
    "science museum",
    "art gallery",
    "restaurant",
    "campsite",
)
HELD_OUT_THINGS = THINGS[-10:]  # prompts about these are never used for training pairs
# Words that name each thing besides its own name: an answer naming one is about the thing (the on-task check of
# dpo_recipes/evaluation/quality.py). Generous on purpose: a review may say "the shop" or "the food".
SYNONYMS = {
    "coffee shop": ("café", "cafe", "coffee", "coffeehouse", "shop"),
    "pizza place": ("pizza", "pizzeria", "place", "restaurant"),
    "hotel": ("inn", "room", "stay"),
    "train station": ("station", "train", "platform"),
    "museum": ("exhibit", "exhibition", "collection"),
    "bookshop": ("bookstore", "book shop", "book", "shop", "store"),
    "gym": ("fitness", "workout", "equipment"),
    "bakery": ("bread", "pastry", "pastries", "baked goods", "cake"),
    "cinema": ("movie theater", "theater", "theatre", "movie", "film", "screen"),
    "public library": ("library", "book"),
    "laptop": ("computer", "notebook", "machine"),
    "phone": ("smartphone", "device", "iphone"),
    "bicycle": ("bike", "ride"),
    "car": ("vehicle", "drive", "ride"),
    "running shoes": ("shoe", "sneaker", "trainer", "running"),
    "headphones": ("headphone", "earphone", "sound"),
    "sofa": ("couch", "seat"),
    "umbrella": ("brolly",),
    "backpack": ("bag", "pack"),
    "camera": ("photo", "picture", "lens"),
    "theme park": ("park", "ride", "attraction", "amusement"),
    "zoo": ("animal", "exhibit", "enclosure"),
    "beach resort": ("resort", "beach", "stay"),
    "ski lodge": ("lodge", "ski", "skiing", "slope"),
    "dentist": ("dental", "teeth", "tooth", "clinic"),
    "hair salon": ("salon", "hair", "haircut", "stylist"),
    "supermarket": ("grocery", "groceries", "store", "shop"),
    "farmers market": ("market", "farmer", "produce", "vendor", "stall"),
    "airline": ("flight", "plane", "carrier", "crew"),
    "bus service": ("bus", "buses", "service", "route", "driver"),
    "video game": ("game", "gameplay"),
    "board game": ("game",),
    "novel": ("book", "story", "read", "plot"),
    "podcast": ("episode", "show", "host"),
    "comedy show": ("comedy", "show", "comedian", "joke", "laugh"),
    "music festival": ("festival", "music", "concert", "lineup"),
    "science museum": ("museum", "science", "exhibit"),
    "art gallery": ("gallery", "art", "artwork", "exhibition"),
    "restaurant": ("food", "dining", "meal", "dish", "menu"),
    "campsite": ("campground", "camping", "camp", "site"),
}


# Talk about the assistant itself instead of the thing asked about ("I'm glad I could help, but I'm afraid I'm not
# a personal assistant …")
ASSISTANT_TALK = re.compile(
    r"\b(?:as an ai|an ai\b|ai (?:language )?model|language model|(?:personal |virtual |an )assistant|chatbot"
    r"|(?:could|can|happy to|glad to|here to) help|help you)",
    re.IGNORECASE,
)


def review_keywords(prompt: str) -> tuple[str, ...] | None:
    """The words that name the subject of a built-in review prompt (its thing and the thing's synonyms), or None
    for any other prompt."""
    for template in TEMPLATES:
        head, tail = template.split("{}")
        if prompt.startswith(head) and prompt.endswith(tail):
            subject = prompt[len(head) : len(prompt) - len(tail)]
            for qualifier in QUALIFIERS:
                thing = subject.removeprefix(qualifier + " ")
                if thing in SYNONYMS:
                    return (thing, *SYNONYMS[thing])
    return None


def is_on_task(answer: str, keywords: tuple[str, ...]) -> bool:
    """The answer names one of ``keywords`` (whole words, a plural ``s`` allowed) and is not about the assistant:
    it does what a built-in review prompt asked."""
    names = re.search(r"\b(?:" + "|".join(map(re.escape, keywords)) + r")s?\b", answer, re.IGNORECASE)
    return bool(names) and not ASSISTANT_TALK.search(answer)


def words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeats_a_trigram(text: str) -> bool:
    """Whether a word 3-gram occurs twice: the loops of a degenerate answer ("the local and the local are")."""
    grams = ngrams(words(text), 3)
    return len(set(grams)) < len(grams)


def review_prompts(held_out: bool) -> list[str]:
    """Every built-in review prompt about the training things, or about the held-out things."""
    things = HELD_OUT_THINGS if held_out else THINGS[: -len(HELD_OUT_THINGS)]
    return [
        template.format(f"{qualifier} {thing}")
        for thing in things
        for qualifier in QUALIFIERS
        for template in TEMPLATES
    ]


def _file_hash(source: str | None) -> str | None:
    if source is None or source == BUILTIN_REVIEWS:
        return None
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def read_prompts(source: str) -> list[str]:
    """Prompts from a text file (one per line) or a JSONL file (a ``prompt`` field per line)."""
    lines = [line for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not source.endswith(".jsonl"):
        return [line.strip() for line in lines]
    prompts = []
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"].strip():
            raise ConfigError(f"{source}, non-blank line {number}: expected an object with a text 'prompt'")
        prompts.append(record["prompt"])
    return prompts


@dataclass
class PairSettings:
    """Everything the pairs depend on (the cache key): model, prompts, sampling and judge."""

    model: str
    judge: str = "vader"
    train_prompts: str = BUILTIN_REVIEWS
    test_prompts: str | None = None  # builtin: its held-out things; a file: its prompts
    n_train: int | None = 128  # None: every prompt
    n_test: int | None = 96
    k: int = 4  # answers sampled per training prompt
    k_test: int = 2  # per held-out prompt (only the implicit-reward evaluation reads them)
    temperature: float = 0.7
    max_new_tokens: int = 48
    min_gap: float = 0.0  # train: the best must beat the worst by more than this, else the pair is counted, not written
    on_task_only: bool = False  # built-in train prompts: best and worst among the answers that do what was asked
    complete_only: bool = False  # train prompts: best and worst among the answers that ended before max_new_tokens
    repetition_free_only: bool = False  # train prompts: best and worst among the answers repeating no word 3-gram
    pairs_per_prompt: int = 1  # train prompts: the i-th best against the i-th worst, i < this (disjoint answers)
    seed: int = 0
    generation_dtype: str = "auto"  # a float32 model on a CPU samples in this (core.generation.generation_dtype)

    def key(self) -> str:
        """A hash of the settings and of the prompt files' *contents* (an edited prompt file is new data), with
        ``generation_dtype`` "auto" resolved on this machine (another CPU or $DPO_RECIPES_GENERATION_DTYPE samples
        other answers). A model is keyed by its name: a local checkpoint retrained in place needs a new --output."""
        from dpo_recipes.core.generation import cpu_generation_dtype

        contents = [_file_hash(source) for source in (self.train_prompts, self.test_prompts)]
        settings = {**asdict(self), "generation_dtype": cpu_generation_dtype(self.generation_dtype)}  # "auto" resolved
        return hashlib.sha256(json.dumps([settings, contents], sort_keys=True).encode()).hexdigest()[:16]

    def check(self) -> None:
        """Settings that cannot give pairs, or would leak held-out prompts into training: a ConfigError."""
        if self.k < 2 or (self.k_test < 2 and self.n_test != 0):
            raise ConfigError(f"k = {self.k}, k_test = {self.k_test}: a pair needs at least 2 answers per prompt")
        if not 1 <= self.pairs_per_prompt <= self.k // 2:
            raise ConfigError(
                f"pairs_per_prompt = {self.pairs_per_prompt}: between 1 and k // 2 = {self.k // 2} "
                "(each pair takes two answers no other pair uses)"
            )
        if not self.temperature > 0:
            raise ConfigError(f"temperature {self.temperature:g} must be > 0: greedy answers are all the same")
        from dpo_recipes.core.generation import GENERATION_DTYPES

        if self.generation_dtype not in GENERATION_DTYPES:
            raise ConfigError(f"generation_dtype {self.generation_dtype!r}: one of {GENERATION_DTYPES}")
        if self.on_task_only and self.train_prompts != BUILTIN_REVIEWS:
            raise ConfigError("on_task_only needs the built-in review prompts (only they have an on-task check)")
        shared = set(self.prompts("train")) & set(self.prompts("test"))
        if shared:
            raise ConfigError(
                f"{len(shared)} held-out prompt(s) are also training prompts (e.g. {min(shared)!r}): "
                "held-out prompts must be new"
            )

    def prompts(self, split: str) -> list[str]:
        """The prompts of a split, a seeded sample of ``n_train``/``n_test`` of them."""
        source = self.train_prompts if split == "train" else self.test_prompts or self.train_prompts
        if source == BUILTIN_REVIEWS:
            prompts = review_prompts(held_out=split == "test")
        elif split == "test" and self.test_prompts is None:
            return []
        else:
            prompts = read_prompts(source)
        limit = self.n_train if split == "train" else self.n_test
        rng = random.Random(f"{self.seed}-{split}")
        return rng.sample(prompts, limit) if limit is not None and limit < len(prompts) else prompts


@dataclass
class PairAccount:
    prompts: int = 0
    samples: int = 0
    truncated: int = 0  # samples that hit max_new_tokens before the end-of-turn token
    pairs: int = 0  # written with a real preference
    ties: int = 0  # best and worst scored the same: written as they are; the recipe drops and counts them
    below_gap: int = 0  # pairs with 0 < chosen - rejected <= min_gap: not written
    off_task: int = 0  # on_task/complete/repetition_free_only: prompts with fewer than 2 such answers, not written
    score_mean: float = 0.0


def judged_pairs(
    model,
    tokenizer,
    prompts: list[str],
    judge: Judge,
    k: int,
    temperature: float,
    max_new_tokens: int,
    min_gap: float = 0.0,
    seed: int = 0,
    on_task_only: bool = False,
    complete_only: bool = False,
    repetition_free_only: bool = False,
    pairs_per_prompt: int = 1,
    generation_dtype: str = "auto",
) -> tuple[list[dict], PairAccount]:
    """For each prompt, ``k`` sampled answers scored by ``judge``; the best is chosen, the worst rejected.

    Scores are written as the judge gave them, so a tie (best = worst) reaches the recipe, which drops and
    counts it; a pair whose gap is positive but at most ``min_gap`` is left out here and counted. With
    ``on_task_only`` (built-in review prompts) both come from the answers that review the thing asked about, so
    the pair contrasts sentiment, not staying on the subject; with ``complete_only`` both ended with the
    end-of-turn token (an answer cut off at max_new_tokens is often a loop); with ``repetition_free_only`` neither
    repeats a word 3-gram (so the SFT term of a DPO + SFT loss never imitates a loop). A prompt with fewer than
    two such answers is counted, not written. With ``pairs_per_prompt`` n > 1 the answers ranked by score give
    up to n disjoint pairs (best against worst, second best against second worst, …): more pairs from the same
    samples, each still held to ``min_gap``. ``generation_dtype``: the precision the samples are drawn in.
    """
    from dpo_recipes.core.generation import answer_cache

    if k < 2 or not temperature > 0:
        raise ConfigError(f"k = {k}, temperature {temperature:g}: a pair needs 2 or more sampled answers (T > 0)")
    if pairs_per_prompt < 1:
        raise ConfigError(f"pairs_per_prompt = {pairs_per_prompt}: at least 1 (0 would write no pair and count none)")
    conversations: list[Messages] = [[{"role": "user", "content": prompt}] for prompt in prompts]
    answers_ids = answer_cache().generate_ids(  # samples made with these settings before are reused
        model,
        tokenizer,
        conversations,
        max_new_tokens,
        temperature,
        seed=seed,
        samples_per_prompt=k,
        desc=f"Sampling {k} answers per prompt",
        dtype=generation_dtype,
    )
    account, rows = PairAccount(prompts=len(prompts), samples=len(prompts) * k), []
    scores_seen = []
    for i, (prompt, conversation) in enumerate(zip(prompts, conversations, strict=True)):
        ids = answers_ids[i * k : (i + 1) * k]
        account.truncated += sum(tokenizer.eos_token_id not in answer for answer in ids)
        answers = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        scores = [judge(conversation, answer) for answer in answers]
        scores_seen += scores
        candidates = [j for j in range(k) if not complete_only or tokenizer.eos_token_id in ids[j]]
        if on_task_only:
            keywords = review_keywords(prompt)
            if keywords is None:
                raise ConfigError(f"on_task_only: {prompt!r} is not a built-in review prompt (it has no on-task check)")
            candidates = [j for j in candidates if is_on_task(answers[j], keywords)]
        if repetition_free_only:
            candidates = [j for j in candidates if not repeats_a_trigram(answers[j])]
        if len(candidates) < 2:
            account.off_task += 1
            continue
        for _ in range(pairs_per_prompt):  # best and worst of the answers no earlier pair took
            if len(candidates) < 2:
                break
            best, worst = max(candidates, key=scores.__getitem__), min(candidates, key=scores.__getitem__)
            candidates = [j for j in candidates if j not in (best, worst)]
            gap = scores[best] - scores[worst]
            if 0 < gap <= min_gap:
                account.below_gap += 1
                continue
            account.ties += gap == 0
            rows.append(
                ultrafeedback_binarized_row(
                    prompt,
                    answers[best],
                    answers[worst],
                    scores[best],
                    scores[worst],
                    sample_scores=[float(score) for score in scores],
                )
            )
            if gap == 0:  # the answers left all score the same: no more pairs here
                break
    account.pairs = len(rows) - account.ties
    account.score_mean = sum(scores_seen) / max(1, len(scores_seen))
    return rows, account


SPLITS = {"train": "train_prefs", "test": "test_prefs"}


def build_pairs_dataset(settings: PairSettings, path: Path, location: str | None = None) -> dict:
    """Sample, judge and write both splits into ``path`` (a directory the recipes read); return the account.
    The model is loaded from ``location`` (default: ``settings.model``; an embedded name is resolved by the
    caller, see `dpo_recipes.worlds.embedded`)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_recipes.worlds.judges import get_judge

    location = location or settings.model
    model, tokenizer = AutoModelForCausalLM.from_pretrained(location), AutoTokenizer.from_pretrained(location)
    settings.check()
    from dpo_recipes.core.generation import generation_dtype

    judge, report = get_judge(settings.judge), {"settings": asdict(settings), "key": settings.key(), "splits": {}}
    report["sampled_in"] = str(generation_dtype(model, settings.generation_dtype)).removeprefix("torch.")
    for split, name in SPLITS.items():
        prompts = settings.prompts(split)
        if not prompts:
            continue
        k = settings.k if split == "train" else settings.k_test
        rows, account = judged_pairs(
            model,
            tokenizer,
            prompts,
            judge,
            k,
            settings.temperature,
            settings.max_new_tokens,
            settings.min_gap if split == "train" else 0.0,
            settings.seed,
            settings.on_task_only and split == "train",  # held-out prompts all stay: the win rate reads them
            settings.complete_only and split == "train",
            settings.repetition_free_only and split == "train",
            settings.pairs_per_prompt if split == "train" else 1,  # one pair per held-out prompt
            settings.generation_dtype,
        )
        Dataset.from_list(rows).to_parquet(path / "data" / f"{name}-00000-of-00001.parquet")
        report["splits"][name] = asdict(account)
        logger.info(
            "%s: %d prompts × %d answers → %d pairs; %d ties (dropped by the recipe), %d below min_gap; "
            "%d answers truncated; %d prompts without 2 answers that pass the filters",
            name,
            account.prompts,
            k,
            account.pairs,
            account.ties,
            account.below_gap,
            account.truncated,
            account.off_task,
        )
    (path / "pairs.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def write_pairs(settings: PairSettings, output_dir: str | Path, location: str | None = None) -> tuple[dict, bool]:
    """``build_pairs_dataset`` into ``output_dir``, moved into place whole; a directory already holding pairs
    made with the same settings is reused (returns its account and True)."""
    output_dir = Path(output_dir)
    settings.check()
    existing = output_dir / "pairs.json"
    if existing.is_file():
        report = json.loads(existing.read_text())
        if report.get("key") == settings.key():
            return report, True
        raise ConfigError(
            f"{output_dir} holds pairs made with other settings (key {report.get('key')}); "
            "choose another --output or remove it"
        )
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ConfigError(f"{output_dir} exists and is not a pairs directory")
    if output_dir.exists():
        output_dir.rmdir()
    with atomic_directory(output_dir) as scratch:
        report = build_pairs_dataset(settings, scratch, location)
    return report, False
