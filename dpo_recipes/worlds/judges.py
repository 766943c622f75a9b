"""Judges: a reward for a response to a prompt, independent of the policy being trained.

    toy-world              the toy world's ground-truth reward (dpo_recipes/worlds/toy_world.py)
    vader                  VADER's sentiment of the response (Hutto & Gilbert 2014, the `vaderSentiment`
                           package: a rule-based lexicon nobody here wrote). The offline analogue of the
                           sentiment classifier that is the ground truth of the DPO paper's IMDb experiment.
    textblob               TextBlob's polarity of the response (the Pattern lexicon of De Smedt & Daelemans 2012,
                           shipped in the `textblob` wheel): the mean polarity of the sentiment words, a
                           different lexicon and method from VADER's, so the main job's second judge
    reward-model:PATH_OR_ID  any one-label sequence-classification reward model

Each is a callable ``(prompt messages, response text) -> float``, used alike by the win rate, the β sweep and
on-policy pair generation (``dpo_recipes.worlds.pairs``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.generation import Messages
from dpo_recipes.worlds import toy_world

Judge = Callable[[Messages, str], float]  # (prompt messages, response text) -> reward


def toy_world_judge(prompt: Messages, response: str) -> float:
    """The toy world's ground-truth reward of a response to the prompt's last user turn."""
    user_turns = [message["content"] for message in prompt if message["role"] == "user"]
    return toy_world.reward(user_turns[-1], response)


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_judge(prompt: Messages, response: str) -> float:
    """VADER's compound sentiment of the response, in [−1, 1] (the prompt is not read: like the DPO paper's
    IMDb classifier, it judges only the sentiment of what was written)."""
    return float(_vader().polarity_scores(response)["compound"])


@lru_cache(maxsize=1)
def _pattern():
    from textblob.en.sentiments import PatternAnalyzer

    return PatternAnalyzer()


def textblob_judge(prompt: Messages, response: str) -> float:
    """TextBlob's Pattern polarity of the response, in [−1, 1] (the prompt is not read). It averages over the
    sentiment words instead of summing them, so a longer answer is not by itself a more positive one."""
    return float(_pattern().analyze(response).polarity)


class RewardModelJudge:
    """A reward model (``AutoModelForSequenceClassification`` with one label) scores prompt + response; the
    conversation is rendered with the reward model's own chat template when it has one."""

    def __init__(self, name_or_path: str):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        device = "cuda" if torch.cuda.is_available() else "cpu"  # beside the policy it judges
        self.model = AutoModelForSequenceClassification.from_pretrained(name_or_path).eval().to(device)
        if self.model.config.num_labels != 1:
            raise ConfigError(f"reward model {name_or_path!r} has {self.model.config.num_labels} labels, not 1")

    @torch.no_grad()
    def __call__(self, prompt: Messages, response: str) -> float:
        conversation = prompt + [{"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in conversation)
        inputs = self.tokenizer(text, return_tensors="pt", truncation=True).to(self.model.device)
        return self.model(**inputs).logits[0, 0].item()


JUDGES: dict[str, Judge] = {"toy-world": toy_world_judge, "vader": vader_judge, "textblob": textblob_judge}
SECOND_JUDGES = {"vader": "textblob", "textblob": "vader"}  # the default second opinion on a sentiment judge


def judge_problem(name: str) -> str | None:
    """Why ``name`` names no judge, or None: checkable before a run, without loading a reward model."""
    if name.startswith("reward-model:") or name in JUDGES:
        return None
    if name.startswith("pairwise"):
        return (
            f"judge {name!r}: TRL 1.16 ships no pairwise judges (trl.judges was removed); "
            "use a reward model (reward-model:PATH_OR_ID), vader or toy-world"
        )
    return f"unknown judge {name!r}; available judges: {', '.join(sorted(JUDGES))}, reward-model:PATH"


def get_judge(name: str) -> Judge:
    """``toy-world``, ``vader``, or ``reward-model:PATH_OR_ID`` for a sequence-classification reward model."""
    problem = judge_problem(name)
    if problem:
        raise ConfigError(problem)
    if name.startswith("reward-model:"):
        return RewardModelJudge(name.removeprefix("reward-model:"))
    return JUDGES[name]


def second_judge_name(judge: str, named: str | None) -> str | None:
    """The second judge of the quality section: the one ``named`` ('' for none), else the default second opinion
    on ``judge`` (None if it has none). It must differ from the judge."""
    name = SECOND_JUDGES.get(judge) if named is None else named or None
    if name == judge:
        raise ConfigError(f"second judge {name!r} is the judge itself: name another (or '' for none)")
    if name:
        problem = judge_problem(name)
        if problem:
            raise ConfigError(problem)
    return name
