"""The data doctor, on data built so that every count is known in advance."""

import json

import pytest

from dpo_recipes.cli import main as cli
from dpo_recipes.data.doctor import diagnose


def _pair(prompt, chosen, rejected, score_chosen=8.0, score_rejected=2.0):
    user = {"role": "user", "content": prompt}
    return {
        "prompt": prompt,
        "chosen": [user, {"role": "assistant", "content": chosen}],
        "rejected": [user, {"role": "assistant", "content": rejected}],
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
    }


LONG_PROMPT = "Describe " + " and ".join(["the red fox"] * 20) + "."
ROWS = [
    _pair("Describe the red fox.", "The red fox is wonderful.", "The red fox is dull and clumsy."),  # 0 normal
    _pair("Describe the blue lamp.", "Same answer.", "Same answer."),  # 1 chosen == rejected
    _pair("Describe the red fox.", "The red fox is wonderful.", "The red fox is dull and clumsy."),  # 2 duplicate of 0
    _pair("Describe the green river.", "Fine.", "Also fine.", 5.0, 5.0),  # 3 tie: dropped
    _pair("Describe the white forest.", "The white forest is lovely.</s>", "It is dull."),  # 4 double EOS
    {**_pair("Describe the black train.", "Fast.", "Slow."), "rejected": [{"role": "user", "content": "x"}]},  # 5 bad
    _pair(LONG_PROMPT, "It is a fox.", "No."),  # 6 the prompt alone fills max_length
]


@pytest.fixture
def doctor_data(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return str(path)


def _kept_replies():
    return [(ROWS[i]["chosen"][1]["content"], ROWS[i]["rejected"][1]["content"]) for i in (0, 2, 4, 6)]


def test_doctor_counts_without_a_tokenizer(doctor_data):
    report = diagnose(doctor_data, "ultrafeedback_binarized", "train")
    assert (report.rows_read, report.rows_kept) == (7, 4)
    assert report.dropped == {
        "tied scores": 1,
        "chosen == rejected (no preference)": 1,
        "bad rejected: expected a conversation ending on an assistant turn after at least one prompt turn": 1,
    }
    assert (report.identical_pairs, report.duplicate_pairs) == (1, 1)
    replies = _kept_replies()
    assert report.length_unit == "characters"
    assert report.chosen_longer_share == pytest.approx(sum(len(c) > len(r) for c, r in replies) / 4)
    assert report.mean_length_ratio == pytest.approx(sum(len(c) / len(r) for c, r in replies) / 4)
    assert report.tokens is None


def test_doctor_token_checks_with_the_tiny_tokenizer(doctor_data, tiny_tokenizer):
    long_prompt = tiny_tokenizer.apply_chat_template(
        ROWS[6]["chosen"][:1], add_generation_prompt=True, return_dict=True
    )
    long_prompt_tokens = len(long_prompt["input_ids"])
    max_length = 40
    assert long_prompt_tokens > max_length  # row 6 alone cannot fit, the others all do
    report = diagnose(doctor_data, "ultrafeedback_binarized", "train", tokenizer=tiny_tokenizer, max_length=max_length)
    assert report.length_unit == "tokens"
    tokens = report.tokens
    assert (tokens.truncated, tokens.completion_vanishes) == (1, 1)
    assert (tokens.double_eos, tokens.double_bos, tokens.prompt_not_prefix) == (1, 0, 0)
    text = report.render()
    assert "completion vanishes 1 (25.0%; TRL drops these)" in text and "chosen == rejected: 1" in text


def test_doctor_finds_prompts_that_are_not_token_prefixes_and_double_bos(tmp_path, tiny_tokenizer):
    rows = [
        {"prompt": "The red fox is wonderf", "chosen": "ul.", "rejected": "ul!"},  # BPE merges across the cut
        {"prompt": "<s><s>Describe the red fox.", "chosen": " Good.", "rejected": " Bad."},  # BOS twice
        {"prompt": "Describe the red fox.", "chosen": " Good.", "rejected": " Bad."},  # clean
    ]
    path = tmp_path / "plain.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = diagnose(str(path), "plain", "train", fmt="standard", tokenizer=tiny_tokenizer)
    assert (report.tokens.prompt_not_prefix, report.tokens.double_bos, report.tokens.double_eos) == (1, 1, 0)


def test_cli_data_list_preview_and_doctor(doctor_data, capsys):
    cli(["data", "list"])
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) >= 10 and any(line.startswith("hh_rlhf ") and "Anthropic/hh-rlhf" in line for line in listing)

    cli(["data", "preview", doctor_data, "--recipe", "ultrafeedback_binarized", "-n", "2", "--format", "standard"])
    preview = capsys.readouterr().out
    assert '"prompt": "Describe the red fox."' in preview
    assert "read 2 rows, kept 1, dropped 1 (1 chosen == rejected" in preview

    cli(["data", "doctor", doctor_data, "--recipe", "ultrafeedback_binarized", "--split", "train", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (report["rows_read"], report["rows_kept"], report["duplicate_pairs"]) == (7, 4, 1)


def test_cli_explains_a_path_without_a_recipe(doctor_data):
    with pytest.raises(SystemExit, match="pass --recipe, one of: .*hh_rlhf"):
        cli(["data", "doctor", doctor_data])
    with pytest.raises(SystemExit, match="--option expects key=value"):
        cli(["data", "preview", doctor_data, "--recipe", "shp", "--option", "min_score_ratio"])


def test_cli_reports_bad_rows_without_a_traceback(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[5]) + "\n")
    with pytest.raises(SystemExit, match=r"dpo-recipes: error: .*row 0: field 'rejected'"):
        cli(["data", "preview", str(path), "--recipe", "ultrafeedback_binarized"])
    with pytest.raises(SystemExit, match="unknown dataset recipe 'nope'; valid recipes: "):
        cli(["data", "preview", str(path), "--recipe", "nope"])
