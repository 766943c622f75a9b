"""A run's folder can be shared: Hub-style card metadata merged with what PEFT writes, an adapter config that
names its base portably, one push of the final folder (against a stand-in for the Hub API), a merged model's
own card."""

import json

import huggingface_hub
import pytest
import yaml

from dpo_recipes import cli
from dpo_recipes.training import sharing
from dpo_recipes.worlds import embedded

from .conftest import TINY, run_flags


def test_base_model_is_a_hub_id_or_left_out(tmp_path):
    assert sharing.hub_id(embedded.SMOLLM2) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert sharing.hub_id(embedded.TINY_SFT) is None  # built here: no Hub model to name
    assert sharing.hub_id(str(tmp_path)) is None and sharing.hub_id("./my-model") is None
    assert sharing.hub_id("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    front = sharing.front_matter(embedded.SMOLLM2, "adapter", "peft", [embedded.REVIEW_PAIRS, "me/pairs"], ["dpo"])
    assert front == {
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "base_model_relation": "adapter",
        "library_name": "peft",
        "pipeline_tag": "text-generation",
        "license": "apache-2.0",
        "datasets": ["me/pairs"],
        "tags": ["dpo"],
    }


def test_our_card_keeps_what_peft_wrote_without_its_local_paths():
    peft_card = (
        "---\nbase_model: /root/.cache/x\nlibrary_name: peft\ntags:\n- base_model:adapter:/root/.cache/x\n- lora\n"
    )
    peft_card += "---\n\n# Model Card\n\n### Framework versions\n\n- PEFT 0.18.0\n"
    card = sharing.merged_card(peft_card, {"library_name": "peft", "tags": ["dpo", "lora"]}, "# Ours\n")
    front, body = sharing.split_card(card)
    assert front == {"library_name": "peft", "tags": ["dpo", "lora"]}
    assert body.startswith("# Ours\n") and body.endswith("### Framework versions\n\n- PEFT 0.18.0\n")
    assert "/root/.cache" not in card and "# Model Card" not in card  # PEFT's placeholder template is not kept


class RecordingHub:
    """A stand-in for huggingface_hub.HfApi: records each call, and what the folder held when it was uploaded."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, private=None, exist_ok=False):
        self.calls.append(("create_repo", repo_id, private, exist_ok))
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, repo_id, folder_path, commit_message, ignore_patterns):
        from pathlib import Path

        files = sorted(str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file())
        card = (Path(folder_path) / "README.md").read_text()
        self.calls.append(("upload_folder", repo_id, files, ignore_patterns, card))


@pytest.mark.slow
def test_push_to_hub_uploads_the_final_folder_once(tmp_path, tiny_sft_path, monkeypatch):
    RecordingHub.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingHub)
    out = tmp_path / "run"
    flags = run_flags(max_steps=2, judge="", crosscheck="false", save_strategy="steps", save_steps=1)
    cli.main(
        ["train", "--config", TINY, "--output_dir", str(out), "--push_to_hub", "true"]
        + ["--hub_model_id", "me/tiny-dpo", "--hub_token", "hf_NOTREAL", *flags]
    )

    assert [call[0] for call in RecordingHub.calls] == ["create_repo", "upload_folder"]
    _, repo, files, ignored, card = RecordingHub.calls[1]
    assert repo == "me/tiny-dpo" and "checkpoint-*" in ignored
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "metrics.json", "report.md"} <= set(files)
    front, body = sharing.split_card(card)
    assert front["library_name"] == "peft" and front["base_model_relation"] == "adapter"
    assert front["pipeline_tag"] == "text-generation" and front["license"] == "apache-2.0"
    assert {"dpo", "trl", "dpo-recipes", "lora"} <= set(front["tags"]) and "base_model" not in front
    assert "## Cross-check verdict" in body and "hf_NOTREAL" not in card
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == embedded.TINY_SFT  # not this machine's cache path


@pytest.mark.slow
def test_a_merged_model_has_a_card_with_front_matter(tmp_path, tiny_sft_path):
    run = tmp_path / "run"
    flags = run_flags(max_steps=1, judge="", crosscheck="false")
    cli.main(["train", "--config", TINY, "--output_dir", str(run), *flags])
    cli.main(["merge", str(run), str(tmp_path / "merged")])
    card = (tmp_path / "merged" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["base_model_relation"] == "merge" and front["library_name"] == "transformers"
    assert front["pipeline_tag"] == "text-generation" and "dpo" in front["tags"]
    assert "merged into the base weights in float32" in card and "AutoModelForCausalLM.from_pretrained" in card
