"""On-policy pairs and the VADER judge: counts, determinism, the recipe reading the result, the cache key."""

import json

import pytest

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.data import load_preference_splits
from dpo_recipes.worlds import pairs
from dpo_recipes.worlds.judges import get_judge, judge_problem, vader_judge
from dpo_recipes.worlds.pairs import HELD_OUT_THINGS, PairSettings, judged_pairs, review_prompts, write_pairs

PROMPT = [{"role": "user", "content": "Write a one-sentence review of the new bakery."}]


def test_vader_scores_known_texts_by_sentiment():
    assert vader_judge(PROMPT, "The bakery is wonderful, friendly and delicious!") > 0.8
    assert vader_judge(PROMPT, "The bakery is awful, dirty and rude.") < -0.7
    assert vader_judge(PROMPT, "The bakery opens at nine.") == 0.0
    assert get_judge("vader") is vader_judge and judge_problem("vader") is None


def test_review_prompts_hold_out_whole_things():
    train, test = review_prompts(held_out=False), review_prompts(held_out=True)
    assert len(train) == 30 * 6 * 4 and len(test) == 10 * 6 * 4 and len(set(train)) == len(train)
    assert not set(train) & set(test)
    assert all(not any(thing in prompt for thing in HELD_OUT_THINGS) for prompt in train)


def length_judge(prompt, response: str) -> float:
    """Longer answers win: a judge the tiny model's answers can vary on (they carry no English sentiment)."""
    return float(len(response.split()))


@pytest.fixture(scope="module")
def tiny(tiny_sft_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_sft_path), AutoTokenizer.from_pretrained(tiny_sft_path)


def test_judged_pairs_count_and_order_best_against_worst(tiny):
    model, tokenizer = tiny
    prompts = [f"What do you think of the {c} fox?" for c in ("red", "blue", "green", "white", "black", "silver")]
    rows, account = judged_pairs(model, tokenizer, prompts, length_judge, k=3, temperature=1.0, max_new_tokens=12)
    assert account.prompts == 6 and account.samples == 18
    assert account.pairs + account.ties == len(rows) == 6 and account.below_gap == 0
    for row in rows:
        assert len(row["sample_scores"]) == 3
        assert row["score_chosen"] == max(row["sample_scores"]) and row["score_rejected"] == min(row["sample_scores"])
        assert length_judge(None, row["chosen"][-1]["content"]) == row["score_chosen"]
        assert length_judge(None, row["rejected"][-1]["content"]) == row["score_rejected"]
        assert row["chosen"][0] == row["rejected"][0] == {"role": "user", "content": row["prompt"]}
    assert sum(row["score_chosen"] == row["score_rejected"] for row in rows) == account.ties
    again, _ = judged_pairs(model, tokenizer, prompts, length_judge, k=3, temperature=1.0, max_new_tokens=12)
    assert again == rows  # seeded: the same pairs every time
    other, _ = judged_pairs(model, tokenizer, prompts, length_judge, k=3, temperature=1.0, max_new_tokens=12, seed=5)
    assert other != rows
    gapped, gap_account = judged_pairs(
        model, tokenizer, prompts, length_judge, k=3, temperature=1.0, max_new_tokens=12, min_gap=100.0
    )
    assert gapped == [row for row in rows if row["score_chosen"] == row["score_rejected"]]
    assert gap_account.below_gap == account.pairs
    with pytest.raises(ValueError, match="2 or more sampled answers"):
        judged_pairs(model, tokenizer, prompts, length_judge, k=1, temperature=1.0, max_new_tokens=4)


def test_written_pairs_are_read_by_the_recipe_and_reused(tmp_path, tiny_sft_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"What do you think of the {c} whale?\n" for c in ("red", "blue", "green", "gold")))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(
        "".join(json.dumps({"prompt": f"What do you think of the {c} lamp?"}) + "\n" for c in ("red", "blue", "green"))
    )
    settings = PairSettings(
        model=tiny_sft_path,
        judge="toy-world",
        train_prompts=str(prompts),
        test_prompts=str(held_out),
        k=3,
        max_new_tokens=12,
        temperature=1.0,
    )
    out = tmp_path / "pairs"
    report, reused = write_pairs(settings, out)
    assert not reused and report["key"] == settings.key()
    train = report["splits"]["train_prefs"]
    assert train["prompts"] == 4 and train["samples"] == 12 and report["splits"]["test_prefs"]["prompts"] == 3
    splits = load_preference_splits(str(out), "ultrafeedback_binarized", {"train": "train_prefs", "test": "test_prefs"})
    assert splits["train"].rows_read == 4 and splits["train"].rows_kept == train["pairs"]
    assert splits["train"].dropped.get("tied scores", 0) == train["ties"]
    assert {row["prompt"][0]["content"] for row in splits["test"].dataset} <= {
        f"What do you think of the {c} lamp?" for c in ("red", "blue", "green")
    }
    assert write_pairs(settings, out) == (report, True)  # same settings: the cache is reused
    with pytest.raises(ConfigError, match="other settings"):
        write_pairs(PairSettings(**{**settings.__dict__, "k": 2}), out)
    prompts.write_text(prompts.read_text() + "What do you think of the pink whale?\n")  # the same path, new prompts
    with pytest.raises(ConfigError, match="other settings"):
        write_pairs(settings, out)  # an edited prompt file is new data, never the old pairs reused


def test_pair_settings_that_cannot_work_or_would_leak_are_refused(tmp_path):
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("Review the zoo.\nReview the park.\n")
    test.write_text("Review the museum.\nReview the zoo.\n")
    with pytest.raises(
        ConfigError, match=r"1 held-out prompt\(s\) are also training prompts \(e.g. 'Review the zoo.'\)"
    ):
        PairSettings(model="m", train_prompts=str(train), test_prompts=str(test)).check()
    with pytest.raises(ConfigError, match="temperature 0 must be > 0"):
        PairSettings(model="m", temperature=0.0).check()
    with pytest.raises(ConfigError, match="at least 2 answers"):
        PairSettings(model="m", k=1).check()
    with pytest.raises(ConfigError, match=r"pairs_per_prompt = 3: between 1 and k // 2 = 2"):
        PairSettings(model="m", k=4, pairs_per_prompt=3).check()
    with pytest.raises(ConfigError, match=r"pairs_per_prompt = 0: between 1"):
        PairSettings(model="m", pairs_per_prompt=0).check()
    with pytest.raises(ConfigError, match=r"generation_dtype 'float16': one of \('auto', 'float32', 'bfloat16'\)"):
        PairSettings(model="m", generation_dtype="float16").check()
    (tmp_path / "bad.jsonl").write_text('{"text": "Review the zoo."}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl, non-blank line 1: expected an object with a text 'prompt'"):
        PairSettings(model="m", train_prompts=str(tmp_path / "bad.jsonl")).prompts("train")


def test_pairs_command_writes_and_then_reuses(tmp_path, tiny_sft_path, capsys):
    from dpo_recipes.cli import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What do you think of the red fox?\nWhat do you think of the blue lamp?\n")
    argv = [
        "pairs",
        "--output",
        str(tmp_path / "out"),
        "--model",
        tiny_sft_path,
        "--judge",
        "toy-world",
        "--prompts",
        str(prompts),
        "--k",
        "2",
        "--max-new-tokens",
        "8",
        "--threads",
        "1",
    ]
    main(argv)
    first = capsys.readouterr().out
    assert "train_prefs: 2 prompts →" in first and f"Wrote {tmp_path / 'out'}" in first
    assert "test_prefs" not in first  # a prompt file without --test-prompts has no held-out split
    main(argv)
    assert f"Reused {tmp_path / 'out'}" in capsys.readouterr().out
    main([*argv, "--generation-dtype", "bfloat16", "--output", str(tmp_path / "bf16")])
    assert f"Wrote {tmp_path / 'bf16'}" in capsys.readouterr().out  # another precision: other samples
    report = json.loads((tmp_path / "bf16" / "pairs.json").read_text())
    assert report["sampled_in"] == "bfloat16" and report["settings"]["generation_dtype"] == "bfloat16"
    with pytest.raises(SystemExit, match="unknown judge 'gpt'"):
        main([*argv[:-8], "--judge", "gpt", "--output", str(tmp_path / "other"), "--prompts", str(prompts)])


def test_auto_precision_pairs_are_keyed_by_what_auto_means_here(monkeypatch):
    settings = PairSettings(model="m")  # generation_dtype "auto"
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", "float32")
    as_float32 = settings.key()
    assert as_float32 == PairSettings(model="m", generation_dtype="float32").key()
    monkeypatch.setenv("DPO_RECIPES_GENERATION_DTYPE", "bfloat16")
    assert settings.key() != as_float32  # other samples: never the float32 pairs reused
    assert settings.key() == PairSettings(model="m", generation_dtype="bfloat16").key()


OLD_BAKERY = ["Write a one-sentence review of the old bakery."]


def sampled(monkeypatch, tokenizer, answers: list[str]) -> list[list[int]]:
    """``answers`` as token ids ended by the end-of-turn token, and every sampling call of judged_pairs returns
    this very list (so a test chooses the samples it ranks; editing the list edits the samples)."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for text in answers]

    class Samples:
        def generate_ids(self, *args, **kwargs):
            return ids

    monkeypatch.setattr("dpo_recipes.core.generation.answer_cache", Samples)
    return ids


def test_on_task_pairs_choose_among_the_answers_that_review_the_thing(tiny, monkeypatch):
    model, tokenizer = tiny
    prompts = ["Write a one-sentence review of the old bakery.", "Describe the new zoo in a single sentence."]
    answers = [
        ["The bakery has fresh bread.", "I'm a passionate baker, amazing, wonderful!", "The bread is stale, sadly."],
        ["A sunny day!", "As an AI I love the zoo!", "The zoo is fine."],  # only one on-task answer
    ]
    ids = sampled(monkeypatch, tokenizer, [text for row in answers for text in row])
    ids[1] = ids[1][:-1]  # the gushing one was cut off at max_new_tokens (the samples are this list)
    decoded = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    rows, account = judged_pairs(model, tokenizer, prompts, vader_judge, k=3, temperature=1.0, max_new_tokens=12)
    assert len(rows) == 2 and rows[0]["chosen"][-1]["content"] == decoded[1]  # the gushing one wins on VADER
    rows, account = judged_pairs(
        model, tokenizer, prompts, vader_judge, k=3, temperature=1.0, max_new_tokens=12, on_task_only=True
    )
    assert account.off_task == 1 and len(rows) == 1
    assert (rows[0]["chosen"][-1]["content"], rows[0]["rejected"][-1]["content"]) == (decoded[0], decoded[2])
    rows, account = judged_pairs(
        model, tokenizer, prompts, vader_judge, k=3, temperature=1.0, max_new_tokens=12, complete_only=True
    )
    assert account.off_task == 0 and rows[0]["chosen"][-1]["content"] == decoded[0]  # the cut-off answer is out
    with pytest.raises(ConfigError, match="not a built-in review prompt"):
        judged_pairs(model, tokenizer, ["Tell me a joke."], vader_judge, 3, 1.0, 12, on_task_only=True)


def test_repetition_free_pairs_leave_out_the_answers_that_loop(tiny, monkeypatch):
    model, tokenizer = tiny
    answers = ["Great bread and the bread is great and the bread is great!", "The bread is good.", "It is bad."]
    ids = sampled(monkeypatch, tokenizer, answers)
    decoded = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    assert [pairs.repeats_a_trigram(text) for text in decoded] == [True, False, False]
    prompt = OLD_BAKERY
    (row,), _ = judged_pairs(model, tokenizer, prompt, vader_judge, k=3, temperature=1.0, max_new_tokens=40)
    assert row["chosen"][-1]["content"] == decoded[0]  # the loop wins on VADER
    (row,), account = judged_pairs(
        model, tokenizer, prompt, vader_judge, k=3, temperature=1.0, max_new_tokens=40, repetition_free_only=True
    )
    assert (row["chosen"][-1]["content"], row["rejected"][-1]["content"]) == (decoded[1], decoded[2])
    assert account.off_task == 0


def test_pairs_per_prompt_pairs_the_ranked_answers_from_both_ends(tiny, monkeypatch):
    model, tokenizer = tiny
    answers = [
        "The bread is wonderful and delicious!",
        "The bread is terrible and disgusting.",
        "The bread is good.",
        "The bread is bad.",
        "The bread is fine and nice.",
    ]
    ids = sampled(monkeypatch, tokenizer, answers)
    decoded = [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
    scores = [vader_judge(PROMPT, text) for text in decoded]
    ranked = sorted(range(5), key=scores.__getitem__, reverse=True)
    assert ranked[0] == 0 and ranked[-1] == 1 and len(set(scores)) == 5  # distinct scores: one order
    prompt = OLD_BAKERY
    rows, account = judged_pairs(model, tokenizer, prompt, vader_judge, 5, 1.0, 40, pairs_per_prompt=2)
    pairs_seen = [(row["chosen"][-1]["content"], row["rejected"][-1]["content"]) for row in rows]
    assert pairs_seen == [(decoded[ranked[0]], decoded[ranked[-1]]), (decoded[ranked[1]], decoded[ranked[-2]])]
    assert account.pairs == 2 and account.below_gap == 0
    second_gap = scores[ranked[1]] - scores[ranked[-2]]
    rows, account = judged_pairs(
        model, tokenizer, prompt, vader_judge, 5, 1.0, 40, min_gap=second_gap, pairs_per_prompt=2
    )
    assert len(rows) == 1 and account.below_gap == 1  # the inner pair is held to min_gap and counted
    rows, _ = judged_pairs(model, tokenizer, prompt, vader_judge, 5, 1.0, 40, pairs_per_prompt=3)
    assert len(rows) == 2  # five answers make two disjoint pairs; the middle one is left alone
    with pytest.raises(ConfigError, match="pairs_per_prompt = 0: at least 1"):
        judged_pairs(model, tokenizer, prompt, vader_judge, 5, 1.0, 40, pairs_per_prompt=0)


def test_pairs_per_prompt_stops_at_a_tie(tiny, monkeypatch):
    model, tokenizer = tiny
    answers = ["The bakery opens at nine.", "It is on Main Street.", "It has a door.", "The bread is here."]
    ids = sampled(monkeypatch, tokenizer, answers)
    assert {vader_judge(PROMPT, tokenizer.decode(i, skip_special_tokens=True)) for i in ids} == {0.0}
    prompt = OLD_BAKERY
    rows, account = judged_pairs(model, tokenizer, prompt, vader_judge, 4, 1.0, 40, pairs_per_prompt=2)
    assert len(rows) == 1 and account.ties == 1 and account.pairs == 0  # one tie, counted; not two
