"""The `trl` recipe: data already in TRL's preference format, in each of its four shapes, and the round trip from
`dpo-recipes data convert` back into training."""

import json
import uuid
from collections import Counter

import pytest
from trl.data_utils import maybe_extract_prompt

from dpo_recipes import cli
from dpo_recipes.data import RecipeError, load_preference_splits
from dpo_recipes.data.registry import BadRow
from dpo_recipes.data.trl_format import GIVEN, TRL_DIFFERS, TRL_SAME, trl

from .conftest import FIXTURES, TINY, run_flags

U, A = "user", "assistant"


def _load(fixture: str, fmt: str = "conversational", on_bad_row: str = "skip", **options):
    path = str(FIXTURES / f"{fixture}.jsonl")
    return load_preference_splits(path, "trl", {"t": "train"}, fmt=fmt, on_bad_row=on_bad_row, **options)["t"]


def _turns(messages):
    return [(m["role"], m["content"]) for m in messages]


def test_standard_explicit_rows_stay_exactly_as_given():
    prepared = _load("trl_standard", fmt="standard")
    rows = [(r["prompt"], r["chosen"], r["rejected"], r["id"]) for r in prepared.dataset]
    assert rows == [
        ("The sky is", " blue.", " green.", "s1"),
        ("Water boils at", " 100 °C at sea level.", " 50 °C.", "s2"),
    ]
    assert dict(prepared.dropped) == {"bad rejected: is missing (null)": 1}
    with pytest.raises(RecipeError, match=r"\(recipe 'trl'\), row 2: field 'rejected'"):
        _load("trl_standard", on_bad_row="error")


def test_standard_rows_become_chat_turns_in_the_conversational_format():
    first = _load("trl_standard").dataset[0]
    assert (_turns(first["prompt"]), _turns(first["chosen"])) == ([(U, "The sky is")], [(A, "blue.")])


def test_standard_implicit_prompts_are_split_between_words_and_on_transcript_turns():
    prepared = _load("trl_standard_implicit", fmt="standard")
    rows = [(r["prompt"], r["chosen"], r["rejected"], r["prompt_split"]) for r in prepared.dataset]
    assert rows == [
        ("The sky is", " blue.", " green.", TRL_SAME),
        # TRL's character-wise split would put "bl" in the prompt and leave "ue." / "ack."
        ("My favourite colour is", " blue.", " black.", TRL_DIFFERS),
        # TRL's would end the prompt at "Assistant: In", inside both answers
        ("\n\nHuman: Is tea healthy?\n\nAssistant:", " In moderation, yes.", " In no way.", TRL_DIFFERS),
    ]
    assert dict(prepared.dropped) == {
        "bad chosen: chosen and rejected share no prompt (no common beginning before a space)": 1
    }
    transcript = _load("trl_standard_implicit").dataset[2]
    assert _turns(transcript["prompt"]) == [(U, "Is tea healthy?")]
    assert _turns(transcript["chosen"]) == [(A, "In moderation, yes.")]


def test_conversational_implicit_prompts_are_the_turns_before_the_final_answer():
    prepared = _load("trl_conversational_implicit")
    rows = [(_turns(r["prompt"]), _turns(r["chosen"]), r["prompt_split"]) for r in prepared.dataset]
    assert rows == [
        ([(U, "What colour is the sky?")], [(A, "It is blue.")], TRL_SAME),
        (
            [(U, "Hi"), (A, "Hello! How can I help?"), (U, "Tell me a fact.")],
            [(A, "Octopuses have three hearts.")],
            TRL_SAME,
        ),
    ]
    assert dict(prepared.dropped) == {
        "bad rejected: its turns before the final assistant turn differ from the chosen one's": 1
    }


@pytest.mark.parametrize("fixture", ["trl_standard_implicit", "trl_conversational_implicit"])
def test_the_prompt_split_label_tells_where_trls_extract_prompt_agrees(fixture):
    """Each row's label against TRL's own maybe_extract_prompt on the raw row (both sides in the raw shape)."""
    labels = []
    for raw in (json.loads(line) for line in (FIXTURES / f"{fixture}.jsonl").read_text().splitlines()):
        fmt = "standard" if isinstance(raw["chosen"], str) else "conversational"
        try:
            ours = trl(raw, fmt)
        except BadRow:
            continue
        theirs = maybe_extract_prompt(raw)
        agree = all(
            _turns_or_text(theirs[key]) == _turns_or_text(ours[key]) for key in ("prompt", "chosen", "rejected")
        )
        labels.append((agree, ours["prompt_split"]))
    assert labels and all((label == TRL_SAME) == agree for agree, label in labels)
    assert {label for _, label in labels} == ({TRL_SAME, TRL_DIFFERS} if "standard" in fixture else {TRL_SAME})


def _turns_or_text(value):
    return _turns(value) if isinstance(value, list) else value


def test_explicit_conversational_rows_keep_their_columns_and_refuse_images():
    prepared = _load("trl")
    assert [r["source"] for r in prepared.dataset] == ["geo", "math"]
    assert Counter(prepared.dataset["prompt_split"]) == {GIVEN: 2}
    assert "images" not in prepared.dataset.column_names
    only = _load("trl", keep_columns="source").dataset
    assert set(only.column_names) == {"prompt", "chosen", "rejected", "source", "prompt_split"}
    with pytest.raises(RecipeError, match="keep_columns names 'nope', a column the data does not have"):
        _load("trl", keep_columns="nope")


def test_data_convert_then_train_on_the_trl_recipe_round_trips(tmp_path, tiny_sft_path):
    converted = tmp_path / "converted"
    cli.main(
        [
            "data",
            "convert",
            str(FIXTURES / "hh_rlhf.jsonl"),
            "--recipe",
            "hh_rlhf",
            str(converted),
            "--to",
            "jsonl",
            "--on-bad-row",
            "skip",
            "--split",
            "train",
        ]
    )
    original = load_preference_splits(str(FIXTURES / "hh_rlhf.jsonl"), "hh_rlhf", {"t": "train"}, on_bad_row="skip")
    again = load_preference_splits(str(converted), "trl", {"t": "train"})
    assert again["t"].rows_read == original["t"].rows_kept and not again["t"].dropped
    assert again["t"].dataset.remove_columns("prompt_split").to_list() == original["t"].dataset.to_list()

    flags = run_flags(max_steps=2, per_device_train_batch_size=2, judge="", crosscheck="false", win_rate_prompts=None)
    cli.main(
        [
            "train",
            "--config",
            TINY,
            *run_flags(
                {"dataset_name": converted, "dataset_recipe": "trl", "allow_eval_on_train": "true"},
                dataset_train_split="train",
                dataset_test_split="train",
            ),
            "--output_dir",
            str(tmp_path / "run"),
            *flags,
        ]
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (
        metrics["train"]["global_step"] == 2
        and metrics["data"]["train"] == "train: read 7 rows, kept 7, dropped 0 (none)"
    )


def test_a_changed_recipe_is_not_served_rows_its_old_code_cached(monkeypatch):
    """datasets' cache key sees a recipe function by name only; `prepare` keys each step by the recipes' source
    as well, so an edit or a new release converts again instead of reading the old rows back."""
    from dpo_recipes.data import registry

    before = _load("trl").dataset
    release = f"another release {uuid.uuid4()}"  # new in every session: never a key an older checkout cached under
    monkeypatch.setattr(registry, "_recipes_source", lambda: release)
    from dpo_recipes.data import trl_format

    monkeypatch.setattr(trl_format, "_extra_columns", lambda row, keep: {"id": "new"})  # the same function, edited
    after = _load("trl").dataset
    assert "id" not in before.column_names and after["id"] == ["new", "new"]
    assert before.cache_files and after.cache_files[0]["filename"] != before.cache_files[0]["filename"]


def test_a_message_prompt_with_text_completions_is_refused_not_dropped():
    """TRL's maybe_extract_prompt would ignore such a prompt and cut the two answers against each other."""
    row = {"prompt": [{"role": "user", "content": "Name a colour."}], "chosen": "Blue.", "rejected": "Red."}
    with pytest.raises(BadRow, match="a message-list prompt with text completions"):
        trl(row)


def test_passed_through_columns_of_any_type_survive_the_conversion():
    """The trl recipe passes extra columns through; real data carries bytes and timestamps in them, which JSON
    cannot hold. `prepare` names such columns instead of encoding them, so they keep their Arrow type."""
    import datetime

    from datasets import Dataset

    from dpo_recipes.data import prepare

    when = datetime.datetime(2024, 5, 1, 12, 30)
    rows = [
        {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Red.", "raw": b"\x00\xffid", "at": when},
        {"prompt": "Name a fruit.", "chosen": "Apple.", "rejected": "Apple.", "raw": b"", "at": when},  # a tie
    ]
    for raw in (Dataset.from_list(rows), Dataset.from_list(rows).to_iterable_dataset()):
        prepared = prepare(raw, "trl", "typed", fmt="standard")
        (row,) = list(prepared.dataset)
        assert row["raw"] == b"\x00\xffid" and row["at"] == when and row["chosen"] == "Blue."
        assert list(row) == ["prompt", "chosen", "rejected", "raw", "at", "prompt_split"]
        assert prepared.rows_read == 2 and sum(prepared.dropped.values()) == 1
    converted = prepare(Dataset.from_list(rows), "trl", "typed", fmt="standard").dataset
    assert converted.features["at"].dtype == "timestamp[us]" and converted.features["raw"].dtype == "binary"


def test_a_stream_whose_rows_carry_different_extra_columns_converts_with_the_gaps_empty():
    """Streamed rows need not share their extra columns: the row without one gets None (datasets fills it from
    the stream's first row, and the conversion's decode would too), and no row is lost."""
    from datasets import IterableDataset

    from dpo_recipes.data import prepare

    rows = [
        {"prompt": "A?", "chosen": "Yes.", "rejected": "No.", "note": "x"},
        {"prompt": "B?", "chosen": "Up.", "rejected": "Down."},
    ]
    prepared = prepare(IterableDataset.from_generator(lambda: iter(rows)), "trl", "mixed", fmt="standard")
    assert [(row["chosen"], row["note"]) for row in prepared.dataset] == [("Yes.", "x"), ("Up.", None)]
