import pytest

from dpo_recipes.worlds.toy_world import (
    MAX_REWARD,
    MIN_REWARD,
    OPINION_WORDS,
    SUBJECTS,
    ToyWorld,
    WorldConfig,
    is_test_subject,
    reward,
    reward_to_score,
    subjects_in,
)

SMALL = WorldConfig(train_pairs=300, test_pairs=200, train_demonstrations=50, test_demonstrations=20)


def test_same_seed_same_data_other_seed_other_data():
    assert ToyWorld(SMALL).splits() == ToyWorld(SMALL).splits()
    other = ToyWorld(WorldConfig(**{**vars(SMALL), "seed": 1}))
    assert other.split("train_prefs") != ToyWorld(SMALL).split("train_prefs")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The red fox is wonderful.", 1 + 2),  # on topic, best word
        ("The red fox is awful.", 1 - 2),  # on topic, worst word
        ("The red fox is wonderful and awful.", 1 + 0),  # sentiment is a mean, not a sum
        ("The red fox is good, good and good.", 1 + 1),  # repeating a word earns nothing
        ("The blue whale is wonderful.", -1 + 2),  # off topic
        ("The red fox is nicer than the blue whale, nice.", -1 + 1),  # names another subject too
        ("I cannot say.", -1 - 2),  # no subject, no opinion: the worst answer
        ("", -1 - 2),
        ("The red fox is.", 1 - 2),  # on topic but no opinion: as bad as the worst opinion
        ("THE RED FOX IS SUPERB.", 1 + 2),  # case-insensitive
    ],
)
def test_reward_by_hand(response, expected):
    assert reward("What do you think of the red fox?", response) == pytest.approx(expected)


def test_reward_bounds_and_score_scale():
    assert reward_to_score(MIN_REWARD) == 1.0 and reward_to_score(MAX_REWARD) == 10.0
    world = ToyWorld(SMALL)
    for row in world.split("train_prefs"):
        for side in ("chosen", "rejected"):
            assert MIN_REWARD <= reward(row["prompt"], row[side][-1]["content"]) <= MAX_REWARD


def test_pairs_in_ultrafeedback_binarized_schema_with_chosen_not_worse():
    for row in ToyWorld(SMALL).split("train_prefs"):
        assert set(row) == {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"}
        assert row["chosen"][0] == row["rejected"][0] == {"role": "user", "content": row["prompt"]}
        assert [m["role"] for m in row["chosen"]] == ["user", "assistant"]
        assert row["messages"] == row["chosen"]
        assert row["score_chosen"] >= row["score_rejected"]
        assert row["score_chosen"] == reward_to_score(reward(row["prompt"], row["chosen"][1]["content"]))


def test_preference_is_not_in_the_prompt():
    """Prompts never mention opinion words: what is preferred is learnable only from the pairs."""
    world = ToyWorld(SMALL)
    for row in world.split("train_prefs") + world.split("test_prefs"):
        assert not set(row["prompt"].lower().strip("?.").split()) & set(OPINION_WORDS)


def test_test_prompts_name_only_held_out_subjects_and_are_diverse():
    world = ToyWorld(SMALL)
    test_subjects = {subjects_in(row["prompt"])[0] for row in world.split("test_prefs")}
    train_subjects = {subjects_in(row["prompt"])[0] for row in world.split("train_prefs")}
    assert test_subjects and all(is_test_subject(s) for s in test_subjects)
    assert not test_subjects & train_subjects
    assert len({row["prompt"] for row in world.split("test_prefs")}) >= 100


def test_sft_demonstrations_are_unbiased():
    """SFT data must not already prefer good answers, or DPO would have nothing left to learn."""
    world = ToyWorld(WorldConfig(train_demonstrations=2000))
    rewards = [reward(r["prompt"], r["messages"][1]["content"]) for r in world.split("train_sft")]
    mean = sum(rewards) / len(rewards)
    assert 0.0 < mean < 1.0  # on-topic ≈ 75% (+0.5); sentiment ≈ 0, or -2 for the 10% without opinion
    assert max(rewards) == MAX_REWARD and min(rewards) < 0


def test_corpus_covers_the_vocabulary():
    text = " ".join(ToyWorld().corpus()).lower()
    assert all(word in text for word in OPINION_WORDS)
    assert all(subject in text for subject in SUBJECTS)
