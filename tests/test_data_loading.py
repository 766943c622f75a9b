"""Loading raw data: bad bytes, streaming, mixtures: nothing is lost without being counted."""

import json
import tempfile
from pathlib import Path

import pytest
from datasets import load_dataset

from dpo_recipes.data import RecipeError, load_preference_splits, prepare
from dpo_recipes.data.mixing import mix

from .conftest import FIXTURES


def _with_bad_bytes(tmp_path):
    lines = (FIXTURES / "truthy_dpo.jsonl").read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b"Great Wall", b"Great \xff\xfe Wall")  # not UTF-8
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"".join(lines))
    return path, lines[1].index(b"\xff")


def test_non_utf8_line_is_named_or_skipped_and_counted(tmp_path):
    path, offset = _with_bad_bytes(tmp_path)
    with pytest.raises(RecipeError, match=rf"row 1 \(line 2 of .*broken.jsonl\): not valid UTF-8 \(byte {offset}:"):
        load_preference_splits(str(path), "truthy_dpo", {"t": "train"})
    before = set(Path(tempfile.gettempdir()).glob("dpo-recipes-clean-*"))
    prepared = load_preference_splits(str(path), "truthy_dpo", {"t": "train"}, on_bad_row="skip")["t"]
    assert prepared.rows_read == 3 and prepared.rows_kept == 1
    assert dict(prepared.dropped) == {"not valid UTF-8": 1, "bad chosen: is empty or whitespace-only": 1}
    assert set(Path(tempfile.gettempdir()).glob("dpo-recipes-clean-*")) == before  # no copy of the data left


def test_unknown_file_type_and_missing_dataset_are_clear_errors(tmp_path):
    (tmp_path / "data.txt").write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_preference_splits(str(tmp_path / "data.txt"), "plain", {"t": "train"})
    with pytest.raises(RecipeError, match=r"dataset '.*nowhere\[train\]': could not load the local path"):
        load_preference_splits(str(tmp_path / "nowhere"), "plain", {"t": "train"})


def test_streaming_counts_fill_in_as_the_stream_is_read():
    stream = load_dataset("json", data_files=str(FIXTURES / "hh_rlhf.jsonl"), split="train", streaming=True)
    prepared = prepare(stream, "hh_rlhf", "hh-stream", on_bad_row="skip")
    rows = list(prepared.dataset)
    assert [row["chosen"][0]["content"] for row in rows][0] == "Water it when the soil is dry and give it sun."
    assert (prepared.rows_read, prepared.rows_kept, len(rows)) == (10, 7, 7)
    assert all(set(row) == {"prompt", "chosen", "rejected"} for row in rows)
    assert sum(prepared.dropped.values()) == 3


MIXTURE = [
    {"dataset": str(FIXTURES / "hh_rlhf.jsonl"), "recipe": "hh_rlhf", "test_split": None},
    {"dataset": str(FIXTURES / "truthy_dpo.jsonl"), "recipe": "truthy_dpo", "fraction": 0.5},
    {"dataset": str(FIXTURES / "sharegpt_pairs.jsonl"), "recipe": "sharegpt_pairs"},
]


def test_mixture_is_deterministic_tagged_and_accounted():
    first, second = mix(MIXTURE, seed=1, on_bad_row="skip"), mix(MIXTURE, seed=1, on_bad_row="skip")
    assert first["train"].dataset.to_list() == second["train"].dataset.to_list()
    train = first["train"]
    assert sorted(train.dataset["source"]) == sorted(
        [MIXTURE[0]["dataset"]] * 7 + [MIXTURE[1]["dataset"]] * 1 + [MIXTURE[2]["dataset"]] * 3
    )
    assert train.rows_read == 10 + 3 + 6 and train.rows_kept == 11
    assert train.dropped[f"{MIXTURE[1]['dataset']}: left out by fraction 0.5"] == 1
    assert len(first["test"].dataset) == 0  # no entry has a test split (single files have one split)
    other_seed = mix(MIXTURE, seed=2, on_bad_row="skip")["train"].dataset["chosen"]
    assert other_seed != train.dataset["chosen"]


def test_mixture_fraction_must_be_a_fraction():
    with pytest.raises(ValueError, match="fraction must be in"):
        mix([{**MIXTURE[0], "fraction": 1.5}])


def test_parquet_and_jsonl_files_give_the_same_rows(tmp_path):
    parquet = tmp_path / "pairs.parquet"
    load_dataset("json", data_files=str(FIXTURES / "sharegpt_pairs.jsonl"), split="train").to_parquet(parquet)
    from_jsonl = load_preference_splits(
        str(FIXTURES / "sharegpt_pairs.jsonl"), "sharegpt_pairs", {"t": "train"}, on_bad_row="skip"
    )["t"]
    from_parquet = load_preference_splits(str(parquet), "sharegpt_pairs", {"t": "train"}, on_bad_row="skip")["t"]
    assert from_parquet.dataset.to_list() == from_jsonl.dataset.to_list()
    assert from_parquet.dropped == from_jsonl.dropped


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_compressed_files_load_with_the_same_rows_and_row_errors(tmp_path, suffix):
    import bz2
    import gzip
    import lzma

    import zstandard

    compress = {
        ".gz": gzip.compress,
        ".bz2": bz2.compress,
        ".xz": lzma.compress,
        ".zst": zstandard.ZstdCompressor().compress,
    }[suffix]
    plain = (FIXTURES / "hh_rlhf.jsonl").read_bytes()
    packed = tmp_path / f"test.jsonl{suffix}"  # the form HH-RLHF is distributed in
    packed.write_bytes(compress(plain))
    expected = load_preference_splits(str(FIXTURES / "hh_rlhf.jsonl"), "hh_rlhf", {"t": "train"}, on_bad_row="skip")
    got = load_preference_splits(str(packed), "hh_rlhf", {"t": "train"}, on_bad_row="skip")
    assert got["t"].dataset.to_list() == expected["t"].dataset.to_list() and got["t"].dropped == expected["t"].dropped

    path, offset = _with_bad_bytes(tmp_path)
    broken = tmp_path / f"broken.jsonl{suffix}"
    broken.write_bytes(compress(path.read_bytes()))
    with pytest.raises(
        RecipeError, match=rf"row 1 \(line 2 of .*broken.jsonl{suffix}\): not valid UTF-8 \(byte {offset}"
    ):
        load_preference_splits(str(broken), "truthy_dpo", {"t": "train"})
    skipped = load_preference_splits(str(broken), "truthy_dpo", {"t": "train"}, on_bad_row="skip")["t"]
    assert skipped.rows_read == 3 and skipped.dropped["not valid UTF-8"] == 1
    (tmp_path / "data.parquet.gz").write_bytes(b"x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_preference_splits(str(tmp_path / "data.parquet.gz"), "plain", {"t": "train"})


def test_csv_cells_stay_the_text_they_hold(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,chosen,rejected\nIs it known?,NA,None\nWhat is 6 x 7?,42,41\nSay nothing.,null,"NaN"\n')
    rows = load_preference_splits(str(path), "plain", {"t": "train"}, fmt="standard")["t"].dataset.to_list()
    assert [(row["chosen"], row["rejected"]) for row in rows] == [("NA", "None"), ("42", "41"), ("null", "NaN")]


def test_scores_in_text_are_parsed_or_named():
    from dpo_recipes.data import BadRow
    from dpo_recipes.data.messages import number

    assert number(" 7.5", "score") == 7.5 and number(3, "score") == 3.0
    with pytest.raises(BadRow, match=r"field 'score': expected a number, got the text 'high'"):
        number("high", "score")
    with pytest.raises(BadRow, match=r"field 'score': is nan, not a finite number"):
        number("NaN", "score")


def test_worker_processes_convert_exactly_as_one_process(monkeypatch):
    """``num_proc`` workers give the same rows, in the same order, and the same drop account; a bad row found by a
    worker is still named by its index in the whole split."""
    from datasets import Dataset

    from dpo_recipes.data import registry

    rows = [json.loads(line) for line in (FIXTURES / "hh_rlhf.jsonl").read_text().splitlines()] * 5
    monkeypatch.setattr(registry, "PARALLEL_ROWS", 1)
    one = prepare(Dataset.from_list(rows), "hh_rlhf", "hh", on_bad_row="skip", num_proc=0)
    two = prepare(Dataset.from_list(rows), "hh_rlhf", "hh-workers", on_bad_row="skip", num_proc=2)
    assert one.dataset.to_list() == two.dataset.to_list() and one.dropped == two.dropped and one.rows_read == 50
    fixture, malformed = rows[:10], 5  # fixture row 5 does not start with a turn marker
    good = [row for i, row in enumerate(fixture) if i != malformed]
    bad = good * 4 + [fixture[malformed]] + good  # row 36: in the second worker's half
    with pytest.raises(RecipeError, match=r"dataset 'hh-bad' \(recipe 'hh_rlhf'\), row 36: field 'chosen'"):
        prepare(Dataset.from_list(bad), "hh_rlhf", "hh-bad", num_proc=2)
