"""The data doctor, on data built so that every count is known in advance."""

import json
import statistics

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
    ratios = sorted(len(c) / len(r) for c, r in replies)
    assert report.length_ratio_quartiles[1] == pytest.approx((ratios[1] + ratios[2]) / 2)  # the median of 4
    assert report.median_lengths == (
        pytest.approx(statistics.median(len(c) for c, _ in replies)),
        pytest.approx(statistics.median(len(r) for _, r in replies)),
    )
    assert report.tokens is None and report.leaks == []  # 4 pairs: too few to call a leak
    assert report.turns.not_alternating == 0 and report.turns.empty_turns == 0


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


def _orca_rows(n: int = 12) -> list[dict]:
    """Orca-pairs schema with the real data's quirk: every rejected answer starts with a space, no chosen one."""
    questions = [f"What is {i} plus {i}?" for i in range(n)]
    return [
        {"system": "", "question": q, "chosen": f"{2 * i}" if i % 2 else f"It is {2 * i}.", "rejected": f" {i}"}
        for i, q in enumerate(questions)
    ]


def test_doctor_reports_a_one_token_label_leak(tmp_path):
    path = tmp_path / "orca.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _orca_rows()))
    report = diagnose(str(path), "orca_dpo_pairs", "train")
    leaks = {leak.feature: leak for leak in report.leaks}
    assert leaks["rejected starts with whitespace"].accuracy == 1.0
    assert leaks["rejected starts with whitespace"].coverage == 1.0
    punctuation = leaks["chosen ends with . ! or ?"]  # half the chosen answers end with a period, no rejected one
    assert (punctuation.accuracy, punctuation.coverage) == (0.75, 0.5)
    assert "chosen longer" not in leaks and "rejected longer" not in leaks
    assert "LABEL LEAK rejected starts with whitespace: predicts chosen vs rejected with accuracy 100.0%" in (
        report.render()
    )


def test_leak_rule_counts_pairs_that_agree_as_a_guess():
    from dpo_recipes.data.leaks import find_leaks, rule_accuracy

    assert rule_accuracy([True, True, False, False], [False, False, False, True]) == (0.625, 0.75)
    balanced = ["Yes."] * 5 + ["yes"] * 5
    assert find_leaks(balanced, list(reversed(balanced))) == []  # the feature is not tied to the label


def test_doctor_counts_irregular_turns_and_markers_inside_messages(tmp_path):
    user, assistant = (
        (lambda text: {"role": "user", "content": text}),
        (lambda text: {"role": "assistant", "content": text}),
    )
    rows = [
        {"chosen": [user("Hi"), assistant("A"), assistant("B"), user("Q"), assistant("Yes.")]},  # not alternating
        {"chosen": [user("Hi"), assistant("A"), user(""), assistant("Yes.")]},  # an empty turn
        {"chosen": [user("Hi"), assistant("Sure.\n\nHuman: and then?\n\nAssistant: Yes.")]},  # merged turns
        {"chosen": [user("Hi"), assistant("Fine.")]},
    ]
    for row in rows:
        row["rejected"] = row["chosen"][:-1] + [assistant("No.")]
    path = tmp_path / "turns.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    turns = diagnose(str(path), "ultrafeedback_binarized", "train").turns
    assert (turns.not_alternating, turns.empty_turns, turns.markers_in_messages) == (1, 1, 1)


def test_doctor_notes_a_max_length_beyond_the_model_and_a_fine_grained_tokenizer(doctor_data, tiny_tokenizer):
    limit = tiny_tokenizer.model_max_length
    report = diagnose(doctor_data, "ultrafeedback_binarized", "train", tokenizer=tiny_tokenizer, max_length=limit + 1)
    assert any(f"exceeds the tokenizer's model_max_length {limit}" in note for note in report.notes)
    completions = [text for pair in _kept_replies() for text in pair]
    assert 0 < report.tokens.chars_per_token < sum(map(len, completions))  # measured on these completions
    fine = report.tokens.chars_per_token < 2.5
    assert fine == any("characters per token here" in note for note in report.notes)
