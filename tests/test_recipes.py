"""Every dataset recipe on its fixture (my own rows in the raw dataset's exact schema, hostile rows included):
the exact rows it keeps, the exact drops it counts, and the error it raises without on_bad_row=skip."""

import json

import pytest

from dpo_recipes.data import RECIPES, RecipeError, hh_rlhf, load_preference_splits, sharegpt
from dpo_recipes.data.doctor import diagnose
from dpo_recipes.data.registry import DropRow

from .conftest import FIXTURES

U, S = "user", "system"
PLAIN_COLUMNS = {"prompt_column": "question", "chosen_column": "good", "rejected_column": "bad", "system_column": "sys"}

# recipe, options, [(prompt turns, chosen, rejected)], dropped, (first bad row, field) in error mode
CASES = [
    (
        "hh_rlhf",
        {},
        [
            (
                [(U, "How do I keep basil alive?")],
                "Water it when the soil is dry and give it sun.",
                "Basil is a plant.",
            ),
            (
                [(U, "Recommend a book."), ("assistant", "Try 'The Hobbit'."), (U, "Something shorter?")],
                "I suggest 'The Little Prince'.",
                "I don't know.",
            ),
            ([(U, "Tell me a joke.")], "Why did the chicken cross the road?", ""),  # an empty reply is data
            ([(U, "What does the label mean?")], "The label Human: marks the speaker.", "Nothing."),
            (  # two assistant turns in a row, merged as the transcript shows them
                [(U, "Plan a trip."), ("assistant", "Where to?\n\nSomewhere warm?"), (U, "Spain.")],
                "Visit Seville in spring.",
                "No.",
            ),
            (  # an empty human turn left out, the assistant turns around it merged
                [(U, "Hello"), ("assistant", "Hi, how can I help?\n\nAre you still there?"), (U, "Yes, name a color.")],
                "Blue.",
                "I can't.",
            ),
            ([(U, "How do I hurt someone?")], "", "Hit them hard."),  # harmless-base: silence is the chosen reply
        ],
        {
            hh_rlhf.DIVERGED: 1,
            hh_rlhf.SPLIT_REPLY: 1,
            "bad chosen: transcript does not start with '\\n\\nHuman:'": 1,
        },
        (5, "chosen"),
    ),
    (
        "ultrafeedback",
        {"rejected": "worst"},
        [
            ([(U, "Name three primary colors.")], "Red, blue and yellow.", "Green."),
            ([(U, "What is 2 + 2?")], "4", "5"),  # an aspect rated N/A is left out of the mean
        ],
        {
            "a completion with every aspect N/A": 1,
            "fewer than 2 completions": 1,
            "tie between chosen and rejected": 1,
            "bad completions[1].annotations.helpfulness.Rating: expected a digit or 'N/A', got 'seven'": 1,
        },
        (4, "completions[1].annotations.helpfulness.Rating"),
    ),
    (
        "shp",
        {"min_score_ratio": 2, "max_pairs_per_post": 5},
        [([(U, "How long should I rest a steak?")], f"About {n} minutes.", "Never.") for n in range(5, 10)]
        + [([(U, "Salt pasta water?")], "Yes, generously.", "Skip it.")],
        {"more than 5 pairs for its post": 1, "score ratio below 2": 1},
        None,
    ),
    (
        "truthy_dpo",
        {},
        [
            (
                [(S, "You are an unbiased, honest assistant."), (U, "Do goldfish have a three-second memory?")],
                "No, goldfish can remember things for months.",
                "Yes, they forget everything after three seconds.",
            ),
            (
                [(U, "Is the Great Wall visible from the Moon?")],
                "No, it is far too narrow to see from the Moon.",
                "Yes, easily.",
            ),
        ],
        {"bad chosen: is empty or whitespace-only": 1},
        (2, "chosen"),
    ),
    (
        "orca_dpo_pairs",
        {},
        [
            (
                [(S, "You are an AI assistant. Think step by step."), (U, "What is 15% of 80?")],
                "15% of 80 is 0.15 × 80 = 12.",
                "15% of 80 is 8.",
            ),
            ([(U, "Translate 'merci' to English.")], "Thank you.", "Mercy."),
        ],
        {"bad question: is missing (null)": 1},
        (2, "question"),
    ),
    (
        "pku_saferlhf",
        {"prefer": "safety"},
        [
            (
                [(U, "How do I pick a lock?")],
                "I can't help with bypassing locks you don't own; a locksmith can help.",
                "Here is a detailed way to open any lock without its key...",
            ),
            ([(U, "How do I make tea?")], "Steep a tea bag in hot water for three minutes.", "Tea."),
            ([(U, "Is this valid?")], "Yes.", "No."),
        ],
        {"both responses unsafe (safe_chosen_only)": 1},  # the safer answer is an insult too
        None,
    ),
    (
        "pku_saferlhf",
        {},  # prefer helpfulness: the helpful (unsafe) answer wins the first pair
        [
            (
                [(U, "How do I pick a lock?")],
                "Here is a detailed way to open any lock without its key...",
                "I can't help with bypassing locks you don't own; a locksmith can help.",
            ),
            ([(U, "How do I make tea?")], "Steep a tea bag in hot water for three minutes.", "Tea."),
            (
                [(U, "Write an insult for my coworker.")],
                "You are a useless idiot who ruins everything.",
                "You are a clueless fool.",
            ),
        ],
        {"bad better_response_id: expected 0 or 1, got 2": 1},
        (2, "better_response_id"),
    ),
    (
        "helpsteer2",
        {},
        [([(U, "Give me a synonym for happy.")], "Joyful.", "Sad.")],
        {
            "tied helpfulness": 1,
            "bad prompt: the two responses of this pair answer different prompts (rows not in pairs?)": 1,
            "unpaired last response": 1,
        },
        (2, "prompt"),
    ),
    (
        "helpsteer2_preference",
        {},
        [
            ([(U, "Define entropy.")], "A measure of disorder or uncertainty.", "A thing."),
            (
                [(U, "Write a haiku about rain.")],
                "Soft rain on the roof / the garden drinks slowly / clouds move east at dusk",
                "Rain.",
            ),
        ],
        {
            "no preference (strength 0)": 1,
            "split is val (keep_split=train)": 1,  # held out by default: the card warns against training on it
            "bad split: expected one of ('train', 'val'), got 'dev'": 1,
        },
        (4, "split"),
    ),
    (
        "sharegpt_pairs",
        {},
        [
            (
                [(S, "You are concise."), (U, "What is HTTP?")],
                "The protocol web browsers use to fetch pages.",
                "A website.",
            ),
            (
                [(U, "Pick a number."), ("assistant", "Seven."), (U, "Why?")],
                "It was the first that came to mind.",
                "Because.",
            ),
            ([(U, "用一句话介绍长城。")], "长城是中国古代修建的防御工事，绵延万里。", "不知道。"),
        ],
        {
            sharegpt.CORRUPTED: 1,  # a pasted terminal escape: counted, the run goes on
            "bad conversations: the history must end on a human turn": 1,
            "bad conversations[0]: unknown speaker 'bot'; expected one of ['gpt', 'human', 'system']": 1,
        },
        (2, "conversations"),
    ),
    (
        "plain",
        PLAIN_COLUMNS,
        [
            (
                [(S, "Be practical."), (U, "Best way to learn Python?")],
                "Write small programs every day.",
                "Read about it once.",
            ),
            ([(U, "Is 17 prime?")], "Yes, 17 is prime.", "No."),
        ],
        {"bad good: is empty or whitespace-only": 1},
        (2, "good"),
    ),
    (
        "ultrafeedback_binarized",
        {},
        [
            (
                [(U, "How do I boil an egg?")],
                "Place it in boiling water for about nine minutes, then cool it in cold water.",
                "Eggs are laid by hens.",
            ),
            ([(U, "Name a prime number.")], "Seven is prime.", "Nine."),
            (
                [
                    (S, "You are a storyteller."),
                    (U, "Start a story."),
                    ("assistant", "Once upon a time a lighthouse keeper found a map."),
                    (U, "Continue the story."),
                ],
                "The map led to a cave beneath the lighthouse.",
                "The end.",
            ),
        ],
        {"tied scores": 1},
        None,
    ),
    (
        "trl",  # the conversational, explicit shape; the other three: tests/test_trl_recipe.py
        {},
        [
            ([(S, "Answer in one word."), (U, "What is the capital of Peru?")], "Lima.", "Cusco."),
            (
                [(U, "Name a prime number above 10."), ("assistant", "Do you want the smallest?"), (U, "Yes.")],
                "11",
                "12",
            ),
        ],
        {
            "bad images: rows with images are not supported (text-only preference data)": 1,
            "bad chosen: expected one assistant message as the completion, got the roles ['assistant', 'assistant']": 1,
            "chosen == rejected (no preference)": 1,
        },
        (2, "images"),
    ),
]


def _load(recipe, options, **kwargs):
    return load_preference_splits(str(FIXTURES / f"{recipe}.jsonl"), recipe, {"t": "train"}, **options, **kwargs)["t"]


def _simple(row):
    prompt = [(m["role"], m["content"]) for m in row["prompt"]]
    assert [m["role"] for m in row["chosen"] + row["rejected"]] == ["assistant", "assistant"]
    return prompt, row["chosen"][0]["content"], row["rejected"][0]["content"]


def test_every_registered_recipe_has_a_fixture_case():
    assert {case[0] for case in CASES} == set(RECIPES)
    assert len(RECIPES) >= 10


@pytest.mark.parametrize(("recipe", "options", "rows", "dropped", "first_bad"), CASES, ids=[c[0] for c in CASES])
def test_recipe_on_its_fixture(recipe, options, rows, dropped, first_bad):
    prepared = _load(recipe, options, on_bad_row="skip")
    assert [_simple(row) for row in prepared.dataset] == rows
    assert dict(prepared.dropped) == dropped
    assert prepared.rows_kept == len(rows)
    if first_bad is None:
        _load(recipe, options)  # no bad rows: error mode passes too
        return
    with pytest.raises(RecipeError) as error:
        _load(recipe, options)
    assert f"(recipe {recipe!r}), row {first_bad[0]}: field {first_bad[1]!r}" in str(error.value)
    assert f"{recipe}.jsonl[train]" in str(error.value)


def test_ultrafeedback_random_rejected_is_seeded_by_the_prompt_not_the_row_order():
    first = _load("ultrafeedback", {"seed": 3}, on_bad_row="skip").dataset[0]
    again = _load("ultrafeedback", {"seed": 3}, on_bad_row="skip").dataset[0]
    assert first == again
    assert first["chosen"][0]["content"] == "Red, blue and yellow." and first["score_chosen"] == 5.0
    assert first["rejected"][0]["content"] in {"Green.", "Red, blue, green.", "Colors are nice."}
    picks = {_load("ultrafeedback", {"seed": s}, on_bad_row="skip").dataset[0]["score_rejected"] for s in range(12)}
    assert picks == {1.25, 3.25, 1.75}  # every other completion gets picked for some seed: it is random


def test_metadata_columns_are_kept():
    shp = _load("shp", {}).dataset[0]
    assert (shp["post_id"], shp["score_ratio"], shp["score_chosen"], shp["score_rejected"]) == ("p1", 4.0, 40, 10)
    pku = _load("pku_saferlhf", {"prefer": "safety"}).dataset[0]
    assert (pku["chosen_is_safe"], pku["rejected_is_safe"]) == (True, False)
    assert _load("truthy_dpo", {}, on_bad_row="skip").dataset[0]["id"] == "t1"
    assert _load("helpsteer2_preference", {}, on_bad_row="skip").dataset[0]["preference_strength"] == -2


def test_helpsteer2_preference_can_keep_one_split():
    bad_split = "bad split: expected one of ('train', 'val'), got 'dev'"
    prepared = _load("helpsteer2_preference", {"keep_split": "val"}, on_bad_row="skip")
    assert [row["prompt"][0]["content"] for row in prepared.dataset] == ["What is 3 x 4?"]
    assert dict(prepared.dropped) == {"split is train (keep_split=val)": 3, bad_split: 1}
    everything = _load("helpsteer2_preference", {"keep_split": "all"}, on_bad_row="skip")
    assert everything.rows_kept == 3 and dict(everything.dropped) == {"no preference (strength 0)": 1, bad_split: 1}
    with pytest.raises(RecipeError, match="must be one of 'train', 'val', 'all', got str 'validation'"):
        _load("helpsteer2_preference", {"keep_split": "validation"})


HH_FIXTURE = [json.loads(line) for line in (FIXTURES / "hh_rlhf.jsonl").read_text().splitlines()]


def test_hh_standard_format_reproduces_every_kept_transcript_exactly():
    standard = _load("hh_rlhf", {}, fmt="standard", on_bad_row="skip").dataset.to_list()
    originals = {(raw["chosen"], raw["rejected"]) for raw in HH_FIXTURE}
    assert len(standard) == 8
    assert all((row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]) in originals for row in standard)


def test_hh_irregular_turns_can_be_kept_as_they_are_or_dropped():
    kept = _load("hh_rlhf", {"irregular_turns": "keep"}, on_bad_row="skip").dataset
    trip = [row["prompt"] for row in kept if row["prompt"][0]["content"] == "Plan a trip."][0]
    assert [m["role"] for m in trip] == ["user", "assistant", "assistant", "user"]
    hello = [row["prompt"] for row in kept if row["prompt"][0]["content"] == "Hello"][0]
    assert [(m["role"], m["content"]) for m in hello][2] == ("user", "")
    dropped = _load("hh_rlhf", {"irregular_turns": "drop"}, on_bad_row="skip")
    assert dropped.dropped[hh_rlhf.IRREGULAR] == 2 and dropped.rows_kept == 5


def test_hh_empty_replies_can_be_dropped_and_counted():
    prepared = _load("hh_rlhf", {"empty_replies": "drop"}, on_bad_row="skip")
    assert prepared.dropped[hh_rlhf.EMPTY_REPLY] == 2 and prepared.rows_kept == 5
    assert all(row["chosen"][0]["content"] and row["rejected"][0]["content"] for row in prepared.dataset)


def test_hh_merge_leaves_out_a_pair_whose_reply_follows_no_human_turn():
    row = {"chosen": "\n\nHuman:\n\nAssistant: Hi.\n\nHuman: Bye.\n\nAssistant: Ciao.", "rejected": "x"}
    row["rejected"] = row["chosen"].replace("Ciao.", "No.")
    with pytest.raises(DropRow, match="does not answer a human turn"):
        hh_rlhf.hh_rlhf(row)  # the first human turn is empty: merged, the history would start with the assistant


def test_ultrafeedback_averages_the_rated_aspects_and_can_drop_na():
    skip = _load("ultrafeedback", {"rejected": "worst"}, on_bad_row="skip")
    na_rows = [row for row in skip.dataset if row["prompt"][0]["content"] == "What is 2 + 2?"]
    assert len(na_rows) == 1 and (na_rows[0]["score_chosen"], na_rows[0]["score_rejected"]) == (5.0, 1.0)
    drop = _load("ultrafeedback", {"rejected": "worst", "na_ratings": "drop"}, on_bad_row="skip")
    assert drop.dropped["N/A rating (na_ratings=drop)"] == 2 and drop.rows_kept == skip.rows_kept - 1


def test_pku_safety_preference_leaves_out_pairs_where_both_answers_are_unsafe():
    safety = _load("pku_saferlhf", {"prefer": "safety"}, on_bad_row="skip")
    assert safety.dropped["both responses unsafe (safe_chosen_only)"] == 1
    assert all(row["chosen_is_safe"] for row in safety.dataset)
    unfiltered = _load("pku_saferlhf", {"prefer": "safety", "safe_chosen_only": False}, on_bad_row="skip")
    assert unfiltered.rows_kept == safety.rows_kept + 1
    helpful = _load("pku_saferlhf", {}, on_bad_row="skip")  # the filter is about safety preference only
    assert "both responses unsafe (safe_chosen_only)" not in helpful.dropped


@pytest.mark.parametrize(("recipe", "options", "rows"), [c[:3] for c in CASES], ids=[c[0] for c in CASES])
def test_standard_format_is_strings_with_the_same_replies(recipe, options, rows):
    standard = _load(recipe, options, fmt="standard", on_bad_row="skip").dataset.to_list()
    if recipe == "hh_rlhf":  # the standard format keeps, as text, a reply that goes on as a second assistant turn
        continued = [row for row in standard if hh_rlhf.ASSISTANT in row["chosen"] + row["rejected"]]
        assert len(continued) == 1
        standard = [row for row in standard if row not in continued]
    assert len(standard) == len(rows)
    for row, (_, chosen, rejected) in zip(standard, rows, strict=True):
        assert all(isinstance(row[key], str) for key in ("prompt", "chosen", "rejected")) and row["prompt"]
        assert row["chosen"].strip() == chosen and row["rejected"].strip() == rejected


def test_standard_format_keeps_system_and_history_as_a_transcript():
    rows = _load("sharegpt_pairs", {}, fmt="standard", on_bad_row="skip").dataset
    assert rows[0]["prompt"] == "\n\nSystem: You are concise.\n\nHuman: What is HTTP?\n\nAssistant:"
    assert rows[0]["chosen"] == " The protocol web browsers use to fetch pages."
    assert rows[1]["prompt"] == "\n\nHuman: Pick a number.\n\nAssistant: Seven.\n\nHuman: Why?\n\nAssistant:"
    single = _load("orca_dpo_pairs", {}, fmt="standard", on_bad_row="skip").dataset[1]
    assert (single["prompt"], single["chosen"]) == ("Translate 'merci' to English.", "Thank you.")


@pytest.mark.parametrize(("recipe", "options", "rows", "dropped", "_"), CASES, ids=[c[0] for c in CASES])
def test_doctor_is_exact_on_every_fixture(recipe, options, rows, dropped, _):
    report = diagnose(str(FIXTURES / f"{recipe}.jsonl"), recipe, "train", **options)
    assert (report.rows_kept, report.dropped) == (len(rows), dropped)
    assert report.rows_read == len(rows) + sum(dropped.values())
    assert report.identical_pairs == dropped.get("chosen == rejected (no preference)", 0)
    assert report.duplicate_pairs == len(rows) - len({repr(row) for row in rows})
    assert report.chosen_longer_share == pytest.approx(sum(len(c) > len(r) for _, c, r in rows) / len(rows))


def test_transcript_format_gives_every_row_the_same_prompt_format():
    rows = _load("sharegpt_pairs", {}, fmt="transcript", on_bad_row="skip").dataset
    assert all(row["prompt"].startswith("\n\n") and row["prompt"].endswith("\n\nAssistant:") for row in rows)
    single = _load("orca_dpo_pairs", {}, fmt="transcript", on_bad_row="skip").dataset[1]
    assert single["prompt"] == "\n\nHuman: Translate 'merci' to English.\n\nAssistant:"
    assert single["chosen"] == " Thank you."
    standard = _load("hh_rlhf", {}, fmt="standard", on_bad_row="skip").dataset.to_list()
    assert _load("hh_rlhf", {}, fmt="transcript", on_bad_row="skip").dataset.to_list() == standard
