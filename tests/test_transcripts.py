"""Transcript formats: HH splits on turn markers, and nothing is lost either way."""

import json

from hypothesis import given
from hypothesis import strategies as st

from dpo_recipes.data.hh_rlhf import parse_transcript
from dpo_recipes.data.messages import message, to_transcript

from .conftest import FIXTURES
from .test_recipes import _load


def test_hh_standard_prompt_plus_reply_is_the_original_transcript():
    raw = [json.loads(line) for line in (FIXTURES / "hh_rlhf.jsonl").read_text().splitlines()]
    kept = _load("hh_rlhf", {}, fmt="standard", on_bad_row="skip").dataset
    originals = [raw[i] for i in (0, 1, 3, 4, 6, 7, 8, 9)]  # the rows the recipe keeps (2 diverges, 5 is malformed)
    for row, original in zip(kept, originals, strict=True):
        assert row["prompt"] + row["chosen"] == original["chosen"]
        assert row["prompt"] + row["rejected"] == original["rejected"]
        assert row["prompt"].endswith("\n\nAssistant:")
    assert kept[1]["chosen"] == " I suggest 'The Little Prince'."  # not cut after the shared " I"


def test_hh_conversational_renders_back_to_the_original():
    raw = [json.loads(line) for line in (FIXTURES / "hh_rlhf.jsonl").read_text().splitlines()]
    kept = _load("hh_rlhf", {}, on_bad_row="skip").dataset.select(range(4))  # the regular transcripts
    for row, original in zip(kept, (raw[i] for i in (0, 1, 3, 4)), strict=True):
        assert to_transcript(row["prompt"] + row["chosen"]) == original["chosen"]
        assert to_transcript(row["prompt"] + row["rejected"]) == original["rejected"]


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1).filter(
    lambda t: "\n\nHuman:" not in t and "\n\nAssistant:" not in t and not t.startswith(" ")
)


@given(st.lists(st.tuples(st.sampled_from(["user", "assistant"]), _text), min_size=1, max_size=6))
def test_transcript_round_trip(turns):
    messages = [message(role, content) for role, content in turns]
    assert parse_transcript(to_transcript(messages)) == messages
