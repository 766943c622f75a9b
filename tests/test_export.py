"""`dpo-recipes data convert`: a recipe's output written as a dataset, with its account, whole or not at all."""

import json

import pytest
from datasets import load_dataset, load_from_disk

from dpo_recipes.cli import main as cli
from dpo_recipes.data import hh_rlhf, load_preference_splits

from .conftest import FIXTURES

HH = str(FIXTURES / "hh_rlhf.jsonl")


def _expected(fmt="conversational"):
    return load_preference_splits(HH, "hh_rlhf", {"t": "train"}, fmt=fmt, on_bad_row="skip")["t"]


@pytest.mark.parametrize(("to", "fmt"), [("jsonl", "conversational"), ("parquet", "standard"), ("disk", "transcript")])
def test_convert_writes_the_recipes_rows_and_their_account(tmp_path, capsys, to, fmt):
    out = tmp_path / "hh"
    cli(
        [
            "data",
            "convert",
            HH,
            str(out),
            "--recipe",
            "hh_rlhf",
            "--split",
            "train",
            "--to",
            to,
            "--format",
            fmt,
            "--on-bad-row",
            "skip",
        ]
    )
    expected = _expected(fmt)
    written = load_from_disk(str(out))["train"] if to == "disk" else load_dataset(str(out), split="train")
    assert written.to_list() == expected.dataset.to_list()
    account = json.loads((out / "account.json").read_text())
    assert account["splits"]["train"] == {
        "rows_read": 10,
        "rows_kept": 7 + (fmt != "conversational"),  # the string formats keep a reply that continues as a turn
        "dropped": dict(expected.dropped),
    }
    assert account["format"] == fmt and hh_rlhf.DIVERGED in account["splits"]["train"]["dropped"]
    assert "train: read 10, kept" in capsys.readouterr().out


def test_convert_stops_at_a_bad_row_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "hh"
    with pytest.raises(SystemExit, match=r"row 5: field 'chosen': transcript does not start with"):
        cli(["data", "convert", HH, str(out), "--recipe", "hh_rlhf", "--split", "train"])
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half-written directory


def test_convert_refuses_to_mix_with_an_existing_directory(tmp_path):
    out = tmp_path / "hh"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    args = ["data", "convert", HH, str(out), "--recipe", "hh_rlhf", "--split", "train", "--on-bad-row", "skip"]
    with pytest.raises(SystemExit, match="exists and is not empty"):
        cli(args)
    assert (out / "mine.txt").read_text() == "keep me"
    cli([*args, "--overwrite"])
    assert not (out / "mine.txt").exists() and (out / "account.json").is_file()


def test_preview_and_doctor_take_the_bad_row_policy(capsys):
    cli(["data", "preview", HH, "--recipe", "hh_rlhf", "-n", "10", "--on-bad-row", "skip"])
    assert "read 10 rows, kept 7, dropped 3" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="row 5: field 'chosen'"):
        cli(["data", "doctor", HH, "--recipe", "hh_rlhf", "--split", "train", "--on-bad-row", "error"])


def test_a_failed_overwrite_keeps_the_old_output(tmp_path, monkeypatch):
    out = tmp_path / "hh"
    args = ["data", "convert", HH, str(out), "--recipe", "hh_rlhf", "--split", "train", "--on-bad-row", "skip"]
    cli(args)
    before = (out / "account.json").read_text()
    monkeypatch.setattr("datasets.Dataset.to_parquet", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        cli([*args, "--overwrite"])
    assert (out / "account.json").read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["hh"]


def test_one_file_is_not_written_as_train_and_test_unless_asked(tmp_path, capsys):
    """A single file stands for every split: converting it to train and test would make a test split that is
    the training data, which `train` itself refuses (allow_eval_on_train)."""
    base = ["data", "convert", HH, "--recipe", "hh_rlhf", "--on-bad-row", "skip"]
    with pytest.raises(SystemExit, match=r"is one file, so the splits train, test would all hold its same rows"):
        cli([*base, str(tmp_path / "refused")])
    assert not (tmp_path / "refused").exists()
    cli([*base, str(tmp_path / "labelled"), "--allow-same-rows"])
    assert "Note: every split holds the same rows" in capsys.readouterr().out
    account = json.loads((tmp_path / "labelled" / "account.json").read_text())
    assert account["note"].startswith("every split holds the same rows") and set(account["splits"]) == {"train", "test"}
