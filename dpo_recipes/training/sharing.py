"""What makes a run's folder shareable: Hub-style front matter for its cards, an adapter config that names its
base portably, and one push of the *final* folder.

- ``base_model`` is a Hub id: a hub model as given, an embedded model as its upstream (SmolLM2's converted
  weights come from ``HuggingFaceTB/SmolLM2-135M-Instruct``), nothing for a local path or the tiny models.
- PEFT writes ``base_model_name_or_path`` as the path it loaded, for an embedded model an absolute path into
  this machine's cache; it is rewritten to the embedded name, which resolves on any machine with this package.
- ``--push_to_hub`` is not left to the trainer, which pushes at each save, before the final adapter, the card
  and the report exist: training runs with it off, and the finished folder is uploaded once, at the end.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from dpo_recipes.core.files import atomic_write_text
from dpo_recipes.worlds import embedded

logger = logging.getLogger(__name__)

UPSTREAM = {embedded.SMOLLM2: "HuggingFaceTB/SmolLM2-135M-Instruct"}  # embedded name → the Hub model it is from
LICENSES = {
    embedded.SMOLLM2: "apache-2.0",  # SmolLM2's licence
    embedded.TINY_BASE: "apache-2.0",  # built here, under this project's licence
    embedded.TINY_SFT: "apache-2.0",
}
NOT_PUSHED = ["checkpoint-*", "checkpoint-*/**", ".dpo-recipes.lock", ".final-model.partial/**", "*.partial"]


def hub_id(name: str) -> str | None:
    """``name`` as a Hub id: an embedded model's upstream (or None), None for a local path, else ``name``."""
    if embedded.is_embedded(name):
        return UPSTREAM.get(name)
    return None if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) else name


def front_matter(base: str, relation: str, library: str, datasets: list[str], tags: list[str]) -> dict:
    """The Hub's model-card metadata for a model trained (or merged) from ``base``."""
    front = {
        "base_model": hub_id(base),
        "base_model_relation": relation,
        "library_name": library,
        "pipeline_tag": "text-generation",
        "license": LICENSES.get(base, "other"),
        "datasets": [hub for name in datasets if (hub := _dataset_hub_id(name))],
        "tags": tags,
    }
    return {key: value for key, value in front.items() if value not in (None, [])}


def _dataset_hub_id(name: str) -> str | None:
    return None if embedded.is_embedded(name) or Path(name).expanduser().exists() else name


def split_card(text: str) -> tuple[dict, str]:
    """(front matter, body) of a model card."""
    if text.startswith("---\n") and "\n---" in text[4:]:
        head, body = text[4:].split("\n---", 1)
        loaded = yaml.safe_load(head)
        return (loaded if isinstance(loaded, dict) else {}), body.lstrip("\n")
    return {}, text


def merged_card(existing: str | None, front: dict, body: str) -> str:
    """Our card merged with one already in the folder (PEFT's or TRL's): their metadata keys kept where ours say
    nothing, tags united, and of their text the framework versions (the rest is PEFT's template of
    "[More Information Needed]" placeholders, which our body fills)."""
    theirs, their_body = split_card(existing or "")
    theirs.pop("base_model", None)  # PEFT names the path it loaded, for an embedded model this machine's cache
    their_tags = [tag for tag in theirs.get("tags") or [] if not str(tag).startswith("base_model:")]
    merged = {**theirs, **front, "tags": list(dict.fromkeys([*front.get("tags", []), *their_tags]))}
    _, found, versions = their_body.partition("### Framework versions")
    kept = f"\n### Framework versions\n\n{versions.strip()}\n" if found and versions.strip() else ""
    return "---\n" + yaml.safe_dump(merged, sort_keys=False, allow_unicode=True) + "---\n\n" + body + kept


def make_adapter_config_portable(output_dir: str | Path, model: str) -> None:
    """Name an embedded base by its embedded name in adapter_config.json, not by this machine's cache path."""
    path = Path(output_dir) / "adapter_config.json"
    if not path.is_file() or not embedded.is_embedded(model):
        return
    config = json.loads(path.read_text())
    if config.get("base_model_name_or_path") != model:
        config["base_model_name_or_path"] = model
        atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def push_folder(output_dir: str | Path, training_args, api=None) -> str:
    """Upload the finished run folder to the Hub repo of ``hub_model_id`` (default: the folder's name), once;
    checkpoints and scratch files stay behind. Returns the repo id."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=training_args.hub_token)
    repo_id = training_args.hub_model_id or Path(output_dir).name
    repo_id = api.create_repo(repo_id, private=training_args.hub_private_repo, exist_ok=True).repo_id
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        commit_message="DPO run: final adapter, model card, metrics and report (dpo-recipes)",
        ignore_patterns=NOT_PUSHED,
    )
    logger.info("Pushed %s to the Hub: %s", output_dir, repo_id)
    return repo_id
