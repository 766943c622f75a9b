"""What `pip install` brings: a wheel built from the tracked files, installed into a fresh virtual environment,
trains the tiny preset by name from an empty directory; and every preset a document names exists."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from dpo_recipes.training import presets

from .conftest import REPO, run_flags


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the files git would track (the checkout gets no build/)."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    listed = ["git", "ls-files", "--cached", "--others", "--exclude-standard"]  # the working tree, less ignored files
    tracked = subprocess.run(listed, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), "."]
    subprocess.run(command, cwd=source, check=True, capture_output=True)
    return next(out.glob("dpo_recipes-*.whl"))


def test_the_wheel_ships_the_presets_launch_scripts_and_accelerate_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in presets.presets():
        assert f"dpo_recipes/recipes/zephyr_style/{preset}.yaml" in names
    for config in presets.accelerate_configs():
        assert f"dpo_recipes/recipes/accelerate_configs/{config}.yaml" in names
    assert {"dpo_recipes/recipes/zephyr_style.py", "dpo_recipes/training/presets.py"} <= names
    packages = {str(p.parent.relative_to(REPO)) for p in (REPO / "dpo_recipes").rglob("__init__.py")}
    assert {f"{package}/__init__.py" for package in packages} <= names  # pyproject lists every subpackage


@pytest.mark.slow
def test_a_fresh_environment_trains_the_tiny_preset_by_name(wheel, tmp_path, tiny_sft_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
    )
    # the test environment's packages stand in for the dependencies (--no-deps), but not its editable checkout
    (Path(site.stdout.strip()) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True)

    empty = tmp_path / "empty"
    empty.mkdir()
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    environment.pop("PYTHONPATH", None)
    where = subprocess.run(
        [python, "-c", "import dpo_recipes; print(dpo_recipes.__file__)"], cwd=empty, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr  # the installed copy, not the checkout
    listed = subprocess.run([venv / "bin" / "dpo-recipes", "presets"], cwd=empty, capture_output=True, text=True)
    assert "tiny" in listed.stdout and str(venv) in listed.stdout, listed.stderr

    flags = run_flags(max_steps=2, judge="", crosscheck="false", win_rate_prompts=None, max_new_tokens=None)
    command = [venv / "bin" / "dpo-recipes", "train", "--config", "tiny", "--output_dir", "run", *flags]
    done = subprocess.run(command, cwd=empty, capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((empty / "run" / "metrics.json").read_text())["train"]["global_step"] == 2


def test_config_names_a_shipped_preset_and_says_what_there_is():
    assert presets.resolve_config("tiny") == str(presets.presets()["tiny"])
    assert presets.resolve_config("recipes/zephyr_style/smollm2.yaml").endswith("zephyr_style/smollm2.yaml")
    assert presets.with_preset_configs(["--config=tiny", "--beta", "0.2"])[0] == f"--config={presets.presets()['tiny']}"
    with pytest.raises(
        ValueError, match=r"--config 'tinny': no such file, and no preset of that name; presets: .*tiny"
    ):
        presets.resolve_config("tinny")


def test_every_preset_and_accelerate_config_a_document_names_exists():
    documents = [REPO / "README.md", *REPO.glob("docs/*.md"), *(REPO / "recipes").rglob("*.py")]
    documents += [*(REPO / "recipes").rglob("*.yaml"), REPO / "notebooks" / "dpo_colab.ipynb"]
    named = {
        (document.name, match)
        for document in documents
        for match in re.findall(
            r"(?<![\w/])recipes/(?:(?:zephyr_style|accelerate_configs)/[\w.-]+\.yaml|\w+\.py)", document.read_text()
        )
    }
    assert named and [(doc, path) for doc, path in sorted(named) if not (REPO / path).is_file()] == []
