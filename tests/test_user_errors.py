"""One error model: a problem in the user's input, settings or environment ends in one line saying what to change;
anything else is a bug and keeps its traceback; --debug (or DPO_RECIPES_DEBUG=1) shows a user error's too."""

import errno
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpo_recipes import cli
from dpo_recipes.core.errors import ConfigError, UserError
from dpo_recipes.data import RecipeError
from dpo_recipes.training.run_directory import save_final_model
from dpo_recipes.training.train import run_from_command_line

from .conftest import FIXTURES, TINY


def test_a_yaml_with_a_python_tag_runs_nothing_and_says_why_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"beta: 0.1\nlearning_rate: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SystemExit) as stopped:
        run_from_command_line(["--config", str(evil), "--output_dir", str(tmp_path / "out")])
    message = str(stopped.value)
    assert "\n" not in message and f"--config {evil}: not plain YAML: could not determine a constructor" in message
    assert "python/object/apply:os.system" in message and "(line 2, column 16)" in message
    assert not marker.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("beta: [0.1\n")
    with pytest.raises(SystemExit, match=r"broken.yaml: not plain YAML: .*\(line \d+, column \d+\)"):
        cli.main(["crosscheck", "--config", str(broken)])


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    with pytest.raises(
        SystemExit, match=r"output_dir '.*a-file' cannot be used: a file, not a directory, is in the way"
    ):
        run_from_command_line(["--config", TINY, "--output_dir", str(taken), "--judge", "", "--crosscheck", "false"])
    assert taken.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("raised", "cause"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "adapter_model.safetensors"), "no space left on the device"),
        (RuntimeError("Error while serializing: IoError(No space left on device (os error 28))"), "no space left"),
        (PermissionError(errno.EACCES, "Permission denied", "adapter_config.json"), "permission denied"),
    ],
)
def test_a_full_disk_or_a_lost_permission_at_the_final_save_is_one_line(tmp_path, raised, cause):
    def save_model(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "adapter_model.safetensors").write_bytes(b"half")
        raise raised

    accelerator = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    trainer = SimpleNamespace(accelerator=accelerator, save_model=save_model)
    with pytest.raises(ConfigError, match=f"the final model could not be written into .*: {cause}"):
        save_final_model(trainer, str(tmp_path))
    assert not (tmp_path / "adapter_model.safetensors").exists()  # nothing half-written in place


def test_a_bug_keeps_its_traceback(monkeypatch):
    def broken(args):
        raise KeyError("a bug, not the user's input")

    monkeypatch.setattr(cli, "data_list", broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["data", "list"])


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch):
    unknown = ["data", "preview", str(FIXTURES / "plain.jsonl"), "--recipe", "no_such_recipe"]
    with pytest.raises(SystemExit, match="unknown dataset recipe 'no_such_recipe'"):
        cli.main(unknown)
    with pytest.raises(RecipeError, match="unknown dataset recipe"):
        cli.main(["--debug", *unknown])
    monkeypatch.setenv("DPO_RECIPES_DEBUG", "1")
    with pytest.raises(UserError):
        cli.main(unknown)


def test_every_long_option_takes_both_spellings(capsys):
    base = ["data", "preview", str(FIXTURES / "hh_rlhf.jsonl"), "--recipe", "hh_rlhf", "-n", "10"]
    for spelling in ("--on-bad-row", "--on_bad_row"):
        cli.main([*base, spelling, "skip"])
    out = capsys.readouterr().out.splitlines()
    accounts = [line for line in out if "read 10 rows" in line]
    assert len(accounts) == 2 and accounts[0] == accounts[1] and "dropped 3" in accounts[0]
