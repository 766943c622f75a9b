import json
import unicodedata

import pytest
from datasets import Dataset, load_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from dpo_recipes.data import RECIPES, BadRow, RecipeError, get_recipe, load_preference_splits, prepare

from .conftest import FIXTURES


@pytest.fixture
def ultrafeedback_rows():
    return [json.loads(line) for line in (FIXTURES / "ultrafeedback_binarized.jsonl").read_text().splitlines()]


def test_ultrafeedback_binarized_to_conversational_preference(ultrafeedback_rows):
    prepared = prepare(Dataset.from_list(ultrafeedback_rows), "ultrafeedback_binarized", "fixture")
    rows = prepared.dataset.to_list()
    assert rows[0]["prompt"] == [{"role": "user", "content": "How do I boil an egg?"}]
    assert rows[0]["chosen"] == [{"role": "assistant", "content": ultrafeedback_rows[0]["chosen"][1]["content"]}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "Eggs are laid by hens."}]
    assert (rows[0]["score_chosen"], rows[0]["score_rejected"], rows[0]["prompt_id"]) == (8.5, 3.0, "a1")


def test_multi_turn_history_becomes_the_prompt(ultrafeedback_rows):
    row = get_recipe("ultrafeedback_binarized").convert(ultrafeedback_rows[3])
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["prompt"] + row["chosen"] == ultrafeedback_rows[3]["chosen"]  # nothing lost
    assert row["prompt"] + row["rejected"] == ultrafeedback_rows[3]["rejected"]


def test_ties_are_dropped_and_counted(ultrafeedback_rows):
    prepared = prepare(Dataset.from_list(ultrafeedback_rows), "ultrafeedback_binarized", "fixture")
    assert (prepared.rows_read, len(prepared.dataset)) == (4, 3)
    assert prepared.dropped == {"tied scores": 1}
    assert "read 4 rows, kept 3, dropped 1 (1 tied scores)" in prepared.describe("train")


def _assistant(text):
    return {"role": "assistant", "content": text}


@pytest.mark.parametrize(
    ("corrupt", "field", "problem"),
    [
        (lambda r: r.update(chosen=None), "chosen", "non-empty list of messages"),
        (lambda r: r.update(chosen=[]), "chosen", "non-empty list of messages"),
        (lambda r: r["rejected"].__setitem__(1, {"role": "bot", "content": "x"}), "rejected", "unknown role 'bot'"),
        (lambda r: r["chosen"].__setitem__(1, _assistant("  ")), "chosen", "final assistant turn is empty"),
        (lambda r: r.update(rejected=r["rejected"][:1]), "rejected", "ending on an assistant turn"),
        (lambda r: r["rejected"].__setitem__(0, {"role": "user", "content": "Other?"}), "rejected", "history differs"),
    ],
)
def test_bad_rows_name_dataset_row_and_field(ultrafeedback_rows, corrupt, field, problem):
    corrupt(ultrafeedback_rows[1])
    with pytest.raises(RecipeError) as error:
        prepare(Dataset.from_list(ultrafeedback_rows), "ultrafeedback_binarized", "my-data[train]")
    message = str(error.value)
    assert "my-data[train]" in message and "ultrafeedback_binarized" in message and "row 1" in message
    assert f"field {field!r}" in message and problem in message


def test_non_text_content_is_a_bad_row(ultrafeedback_rows):
    """(Arrow cannot even hold such a row beside text ones, so this is checked on the function itself.)"""
    row = ultrafeedback_rows[1]
    row["chosen"][1]["content"] = 7
    with pytest.raises(BadRow, match="field 'chosen': turn 1 content is int, not text"):
        get_recipe("ultrafeedback_binarized").convert(row)


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(RecipeError, match="valid recipes: .*ultrafeedback_binarized"):
        get_recipe("ultrafeedbak")
    assert all(recipe.summary for recipe in RECIPES.values())


def test_local_files_and_the_embedded_world_load_through_the_same_path(tmp_path):
    (tmp_path / "data").mkdir()
    for split in ("train_prefs", "test_prefs"):
        lines = (FIXTURES / "ultrafeedback_binarized.jsonl").read_text()
        (tmp_path / "data" / f"{split}-00000-of-00001.jsonl").write_text(lines)
    local = load_preference_splits(str(tmp_path), "ultrafeedback_binarized", {"train": "train_prefs"})
    assert len(local["train"].dataset) == 3
    world = load_preference_splits(
        "dpo-recipes/toy-world", "ultrafeedback_binarized", {"test": "test_prefs"}, max_rows={"test": 40}
    )
    assert world["test"].rows_read == 40
    assert len(world["test"].dataset) + sum(world["test"].dropped.values()) == 40
    assert len(load_dataset(str(tmp_path), split="test_prefs")) == 4


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]) | st.sampled_from(" \u200b\u3164\ufeff\u2800\u00ad"))
)
def test_visible_is_whether_any_character_shows(value):
    """The compiled check equals its definition: some character is not whitespace, not a format character
    (Unicode Cf) and not a blank filler."""
    from dpo_recipes.data.messages import _INVISIBLE, visible

    shows = any(not ch.isspace() and ch not in _INVISIBLE and unicodedata.category(ch) != "Cf" for ch in value)
    assert visible(value) == shows
