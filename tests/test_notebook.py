"""The Colab notebook runs top to bottom on the offline tiny preset (so it cannot rot) and is stored stripped."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest

from .conftest import REPO, run_flags

NOTEBOOK = REPO / "notebooks" / "dpo_colab.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert [cell for cell in code if "parameters" in cell["metadata"].get("tags", [])]


@pytest.mark.slow
def test_notebook_fine_tunes_end_to_end_on_the_tiny_preset(tmp_path, tiny_sft_path):
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    run = tmp_path / "run"
    quick = run_flags(max_steps=6, max_train_samples=96, max_eval_samples=32, win_rate_prompts=6)
    values = dict(REPO_URL="", REPO_REF="", INSTALL=False, PIP_FLAGS=[], PRESET="tiny", EXTRA_FLAGS=quick)
    values.update(OUTPUT_DIR=str(run), EVAL_PROMPTS=6)
    values["TEMPERATURES"] = "0,1"
    parameters.source = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    client = NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()

    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert errors == []
    text = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert "preset: tiny" in text and "held-out implicit-reward accuracy" in text and "win rate" in text
    assert "trained 6 steps in" in text and "on the CPU (measured in this session)" in text
    markdown = [
        out["data"]["text/markdown"]
        for c in notebook.cells
        for out in c.get("outputs", [])
        if "data" in out and "text/markdown" in out["data"]
    ]
    assert any(m.startswith("| prompt | reference | DPO policy |") and m.count("\n") == 3 for m in markdown)
    images = [out for cell in notebook.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) == 2  # the training curves and the win rate across temperatures, inline
    for name in ("adapter_model.safetensors", "README.md", "evaluation.json", "win_rate_vs_temperature.png"):
        assert (run / name).is_file(), name
    assert (tmp_path / "run-merged" / "model.safetensors").is_file()


def _install_cell() -> str:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    return next(cell.source for cell in notebook.cells if "def step(" in cell.source)


@pytest.mark.slow
def test_the_install_cell_clones_installs_repairs_and_says_why_it_failed(tmp_path):
    """The install branch Colab takes, run for real against a file:// clone of this checkout at its commit, in a
    fresh virtual environment (the test environment's packages stand in for the pinned ones: --no-deps)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True, text=True
    )
    (Path(site.stdout.strip()) / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    work = tmp_path / "colab"
    work.mkdir()

    def run_cell(url: str) -> subprocess.CompletedProcess:
        values = dict(REPO_URL=url, REPO_REF=commit, INSTALL=True, PIP_FLAGS=["--no-deps", "--no-build-isolation"])
        script = "".join(f"{name} = {value!r}\n" for name, value in values.items()) + _install_cell()
        environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        return subprocess.run([python, "-c", script], cwd=work, capture_output=True, text=True, env=environment)

    done = run_cell(f"file://{REPO}")
    assert done.returncode == 0, done.stderr[-2000:]
    checkout = work / "dpo-recipes"
    head = subprocess.run(["git", "-C", checkout, "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert head.strip() == commit and f"project: {checkout}" in done.stdout
    where = subprocess.run(
        [python, "-c", "import dpo_recipes; print(dpo_recipes.__file__)"], cwd=tmp_path, capture_output=True, text=True
    )
    assert where.stdout.startswith(str(checkout)), where.stdout + where.stderr  # installed, editable

    (checkout / "pyproject.toml").unlink()  # an interrupted clone, say
    assert run_cell(f"file://{REPO}").returncode == 0 and (checkout / "pyproject.toml").is_file()  # repaired

    shutil.rmtree(checkout)
    failed = run_cell(f"file://{tmp_path / 'no-such-repository'}")
    last = failed.stderr.strip().splitlines()[-1]
    assert failed.returncode != 0 and last.startswith("git clone failed: ") and "run this cell again" in last
