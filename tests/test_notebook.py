"""The Colab notebook runs top to bottom on the offline tiny preset (so it cannot rot) and is stored stripped."""

import json

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
    values = dict(REPO_URL="", PRESET="tiny", EXTRA_FLAGS=quick, OUTPUT_DIR=str(run), EVAL_PROMPTS=6)
    values["TEMPERATURES"] = "0,1"
    parameters.source = "".join(f"{name} = {value!r}\n" for name, value in values.items())
    client = NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    client.execute()

    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert errors == []
    text = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert "preset: tiny" in text and "held-out implicit-reward accuracy" in text and "win rate" in text
    images = [out for cell in notebook.cells for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    assert len(images) == 2  # the training curves and the win rate across temperatures, inline
    for name in ("adapter_model.safetensors", "README.md", "evaluation.json", "win_rate_vs_temperature.png"):
        assert (run / name).is_file(), name
    assert (tmp_path / "run-merged" / "model.safetensors").is_file()
