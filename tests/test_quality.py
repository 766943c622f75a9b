"""The judge-gaming detectors on hand-made answers: off-topic, repeated n-grams, longer-but-equal answers, a second
judge that disagrees, and the flag they raise together."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from dpo_recipes.core.generation import completion_logps
from dpo_recipes.evaluation import quality
from dpo_recipes.evaluation.comparison import Comparison, quality_of
from dpo_recipes.worlds import pairs
from dpo_recipes.worlds.judges import second_judge_name, textblob_judge, vader_judge

CAMPSITE = "Give me your one-sentence opinion of a popular campsite."
GAME = "Write a one-sentence review of the local video game."


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_every_builtin_review_prompt_has_an_on_task_check_and_other_prompts_have_none():
    prompts = pairs.review_prompts(held_out=False) + pairs.review_prompts(held_out=True)
    assert set(pairs.SYNONYMS) == set(pairs.THINGS)
    assert all(pairs.review_keywords(prompt) for prompt in prompts)
    assert pairs.review_keywords(CAMPSITE)[0] == "campsite"
    assert pairs.review_keywords("Tell me a joke.") is None
    result = quality.on_task([user("Tell me a joke.")], ["Knock knock."], ["Why not."])
    assert "skipped" in result and "n" not in result


@pytest.mark.parametrize(
    ("prompt", "answer", "on_task"),
    [
        (CAMPSITE, "The campsite was quiet, clean and close to the lake.", True),
        (CAMPSITE, "Great camping spots and friendly rangers.", True),
        (CAMPSITE, "I'm thrilled to share that I'm a dedicated and passionate camper!", False),  # about itself
        (GAME, "I'm glad I could help, but I'm afraid I'm not a personal assistant.", False),
        (GAME, "This game is wonderful, but as an AI I cannot play it.", False),  # names it, talks about the AI
        (GAME, "The gameplay is smooth and the story gripping.", True),
        (GAME, "A lovely sunny afternoon with friends.", False),  # off the subject
    ],
)
def test_on_task_needs_the_subject_and_no_talk_about_the_assistant(prompt, answer, on_task):
    assert pairs.is_on_task(answer, pairs.review_keywords(prompt)) is on_task


def test_on_task_shares_policy_and_reference():
    prompts = [user(CAMPSITE), user(GAME)]
    result = quality.on_task(prompts, ["I'm a passionate camper!", "The game is fun."], ["Nice campsite.", "Fun game."])
    assert result == {"policy": 0.5, "reference": 1.0, "n": 2, "policy_only": 0, "reference_only": 1}


def test_repetition_counts_distinct_bigrams_and_repeated_trigrams():
    looping = "with a focus on the local and the local are with a focus on the local"
    plain = "A quiet campsite by the lake."
    assert quality.repetition([plain])["distinct_2"] == 1.0
    assert quality.repetition([plain])["share_repeated_3gram"] == 0.0
    result = quality.repetition([looping, plain])
    assert result["share_repeated_3gram"] == 0.5
    assert result["distinct_2"] < 0.8


def test_the_length_controlled_win_rate_removes_a_win_explained_by_length():
    # the policy wins exactly when its answer is longer, and is as often longer as shorter: by length alone
    n = 40
    longer = ["word " * 30] * (n // 2) + ["word " * 5] * (n // 2)
    reference = ["word " * 15] * n
    policy_rewards = [1.0] * (n // 2) + [0.0] * (n // 2)
    lc = quality.length_controlled_win_rate(policy_rewards, [0.5] * n, longer, reference)
    assert lc["slope_per_sd"] > 1 and lc["ci95"][0] < 0.5 < lc["ci95"][1]
    # the same answers all longer and all winning: the raw win rate is 1; at equal length it is unknown, so the
    # interval is wide and below 1
    lc_all = quality.length_controlled_win_rate(
        [1.0] * n, [0.0] * n, ["word " * (20 + i % 5) for i in range(n)], reference
    )
    assert lc_all["ci95"][1] <= 1.0 and lc_all["ci95"][0] < 0.97
    # wins that do not depend on length stay wins
    even = ["word " * (10 + (i % 11)) for i in range(n)]
    lc_even = quality.length_controlled_win_rate([1.0] * (n - 4) + [0.0] * 4, [0.0] * n, even, reference)
    assert lc_even["win_rate"] == pytest.approx(0.9, abs=0.05) and lc_even["ci95"][0] > 0.7


def test_the_second_judge_is_another_lexicon_and_never_the_judge_itself():
    assert second_judge_name("vader", None) == "textblob"
    assert second_judge_name("toy-world", None) is None
    assert second_judge_name("vader", "") is None
    with pytest.raises(ValueError, match="judge itself"):
        second_judge_name("vader", "vader")
    gushing = "I'm thrilled! Amazing, wonderful, fantastic, love love love!!!"
    assert vader_judge([], gushing) > 0.9 and textblob_judge([], "The campsite is dirty.") < 0
    # TextBlob averages over sentiment words: repeating them does not raise its score the way a sum would
    assert textblob_judge([], "good " * 10) == pytest.approx(textblob_judge([], "good"))


def summary(rate: float, low: float, high: float) -> dict:
    return {"win_rate": rate, "ci95": [low, high]}


def measures(task=(0, 0), repeats=(0, 0), nll=((2.0, 0.05), (2.0, 0.05)), second=None) -> dict:
    """Quality measures on 64 prompts; ``task``/``repeats``: (prompts only the reference's / only the policy's
    answer is on-task), (only the policy's / only the reference's answer repeats)."""
    return {
        "on_task": {"policy": 0.9, "reference": 0.9, "n": 64, "reference_only": task[0], "policy_only": task[1]},
        "repetition": {
            "policy": {"share_repeated_3gram": 0.3},
            "reference": {"share_repeated_3gram": 0.1},
            "policy_only": repeats[0],
            "reference_only": repeats[1],
        },
        "fluency": {
            "reference_nll_of_policy_answers": {"mean": nll[0][0], "stderr": nll[0][1]},
            "reference_nll_of_reference_answers": {"mean": nll[1][0], "stderr": nll[1][1]},
        },
        "second_judge": second or {"skipped": "none"},
    }


def test_the_gaming_flag_needs_a_rising_win_rate_and_a_falling_measure():
    winning = summary(0.89, 0.79, 0.95)
    assert quality.gaming_reasons(winning, measures()) == []
    assert quality.gaming_reasons(winning, measures(task=(10, 1)))[0].startswith("on-task fell")  # McNemar z 3.0
    assert quality.gaming_reasons(winning, measures(task=(6, 2))) == []  # z 1.4: chance
    assert "repeating a 3-gram" in quality.gaming_reasons(winning, measures(repeats=(20, 3)))[0]  # 0.1 → 0.3
    few_more = measures(repeats=(6, 0))
    few_more["repetition"]["policy"]["share_repeated_3gram"] = 0.19  # beyond chance, but within the margin
    assert quality.gaming_reasons(winning, few_more) == []
    assert "NLL" in quality.gaming_reasons(winning, measures(nll=((2.6, 0.05), (2.0, 0.05))))[0]
    # beyond its interval but within the margin any moved policy shows: not a fall in fluency
    assert quality.gaming_reasons(winning, measures(nll=((2.15, 0.02), (2.0, 0.02)))) == []
    against = {"judge": "textblob", "win_rate": 0.30, "ci95": [0.20, 0.42]}
    reasons = quality.gaming_reasons(winning, measures(second=against))
    assert reasons[0].startswith("the second judge (textblob) prefers the reference")
    lukewarm = {"judge": "textblob", "win_rate": 0.55, "ci95": [0.43, 0.67], "difference": {"mean": 0.34}}
    assert quality.gaming_reasons(winning, measures(second=lukewarm)) == []  # less keen, but not against
    # without a rising win rate there is nothing to suspect
    assert quality.gaming_reasons(summary(0.55, 0.43, 0.67), measures(task=(30, 0), repeats=(30, 0))) == []


def test_paired_counts_and_the_judges_difference():
    assert quality.discordant([True, False, True, False], [True, True, False, False]) == {
        "policy_only": 1,
        "reference_only": 1,
    }
    assert quality.mcnemar_z(9, 0) == pytest.approx(3.0) and quality.mcnemar_z(0, 0) == 0.0
    first, second = quality.verdicts([2, 1, 1], [1, 1, 2]), quality.verdicts([1, 1, 2], [2, 1, 1])
    assert first == [1.0, 0.5, 0.0] and quality.judges_differ(first, second)["mean"] == pytest.approx(0.0)
    assert quality.repetition_of_both(["a b c a b c"], ["a b c"])["policy_only"] == 1


def test_quality_of_a_comparison_measures_fluency_with_the_reference(tiny_sft_path, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path)
    prompts = [user(CAMPSITE), user(GAME)]
    ids = [tiny_tokenizer("a red fox", add_special_tokens=False)["input_ids"], [tiny_tokenizer.eos_token_id]]
    reference_logps = completion_logps(model, tiny_tokenizer, prompts, ids)
    comparison = Comparison(prompts, ["x", "y"], ["x", "y"], [1.0, 0.0], [0.0, 0.0], ids, ids, reference_logps)
    result = quality_of(comparison, model, tiny_tokenizer, ref_model=model, second_judge=("textblob", textblob_judge))
    nll = result["fluency"]
    # the same answers under the same model: the three NLLs agree, and equal −log p per token
    assert nll["reference_nll_of_policy_answers"] == nll["reference_nll_of_reference_answers"]
    assert nll["policy_nll_of_policy_answers"]["mean"] == pytest.approx(nll["reference_nll_of_policy_answers"]["mean"])
    assert nll["policy_nll_of_policy_answers"]["mean"] > 0
    assert result["second_judge"]["judge"] == "textblob" and result["second_judge"]["n"] == 2
    assert result["gaming_reasons"] == []  # a win rate of 0.75 on 2 prompts is no rise
    assert torch.isfinite(torch.tensor(result["length_controlled_win_rate"]["win_rate"]))
