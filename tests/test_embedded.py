import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset

from dpo_recipes.core.files import atomic_directory, atomic_write_text
from dpo_recipes.worlds import embedded
from dpo_recipes.worlds.tiny_lm import build_tiny_model, train_tokenizer


def test_other_names_pass_through_unchanged():
    assert embedded.resolve("HuggingFaceH4/ultrafeedback_binarized") == "HuggingFaceH4/ultrafeedback_binarized"
    assert embedded.resolve("/some/local/model") == "/some/local/model"


def test_world_is_built_once_in_the_hub_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_RECIPES_CACHE", str(tmp_path))
    path = Path(embedded.resolve(embedded.WORLD))
    assert path.parent == tmp_path
    splits = load_dataset(str(path))  # the plain loader finds the splits from the hub-style file names
    assert set(splits) == {"train_prefs", "test_prefs", "train_sft", "test_sft"}
    assert {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(splits["train_prefs"].features)

    calls = []
    monkeypatch.setattr(embedded, "atomic_directory", lambda target: calls.append(target))
    assert embedded.resolve(embedded.WORLD) == str(path)
    assert calls == []  # cached: not rebuilt


def test_interrupted_build_leaves_nothing_behind(tmp_path):
    target = tmp_path / "artifact"
    with pytest.raises(RuntimeError), atomic_directory(target) as scratch:
        (scratch / "half-written").write_text("x")
        raise RuntimeError("killed mid-build")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_whole_files_with_normal_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "{}")
    atomic_write_text(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    assert path.stat().st_mode & 0o044 == 0o044  # readable by group and others under the usual umask
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_cache_key_covers_settings_and_builder_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_RECIPES_CACHE", str(tmp_path))
    calls = []

    def build(path):
        calls.append(path)

    settings, _, modules = embedded._BUILDERS[embedded.WORLD]
    monkeypatch.setitem(embedded._BUILDERS, embedded.WORLD, (settings, build, modules))
    original = embedded.resolve(embedded.WORLD)
    monkeypatch.setitem(embedded._BUILDERS, embedded.WORLD, ({**settings, "seed": 7}, build, modules))
    assert embedded.resolve(embedded.WORLD) != original  # other settings, other artifact

    real_getsource = embedded.inspect.getsource
    monkeypatch.setattr(embedded.inspect, "getsource", lambda module: real_getsource(module) + "# edited\n")
    assert embedded.resolve(embedded.WORLD) != original  # edited builder code, rebuilt
    assert len(calls) == 3


def _settings_under(seed: str) -> subprocess.CompletedProcess:
    """The tiny models' settings as a process started with DPO_RECIPES_SEED=seed sees them."""
    code = "import json; "
    code += "from dpo_recipes.worlds import embedded as e; print(json.dumps([e.BASE_SETTINGS, e.SFT_SETTINGS]))"
    environment = {**os.environ, "DPO_RECIPES_SEED": seed}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)


def test_the_seed_switch_builds_the_tiny_models_as_another_machine_would(tmp_path, monkeypatch):
    """DPO_RECIPES_SEED seeds the tiny base's initial weights and its SFT training, and each seed has its own cache
    entry (the settings are part of the key), so `DPO_RECIPES_SEED=1 make test` runs on other weights."""
    base, sft = json.loads(_settings_under("3").stdout)
    assert base["seed"] == 3 and sft["seed"] == 3
    assert embedded.BASE_SETTINGS["seed"] == int(os.environ.get("DPO_RECIPES_SEED", "0"))
    refused = _settings_under("one")
    assert refused.returncode != 0 and "DPO_RECIPES_SEED='one': expected a non-negative integer" in refused.stderr

    tokenizer = train_tokenizer(["the red fox is kind"] * 8, vocab_size=300)
    weights = [build_tiny_model(tokenizer, seed=seed).model.embed_tokens.weight for seed in (0, 1)]
    assert not weights[0].equal(weights[1])  # another seed, other weights
