"""The presets that ship with the package: the recipe YAMLs and the accelerate configs of ``recipes/``.

In a clone they are the repository's ``recipes/`` folder; in an installed wheel the same files are package data
under ``dpo_recipes/recipes/`` (pyproject.toml maps the folder there). So ``--config tiny`` works after a plain
``pip install``: a ``--config`` value that is not an existing file is looked up by preset name, and
``dpo-recipes presets`` lists what there is.
"""

from __future__ import annotations

from pathlib import Path

from dpo_recipes.core.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1]
RECIPE_PRESETS = "zephyr_style"  # the recipe whose YAMLs are the named presets
ACCELERATE_CONFIGS = "accelerate_configs"


def recipes_folder() -> Path:
    """``recipes/`` of this installation: package data in a wheel, the repository's folder in a clone."""
    shipped = PACKAGE / "recipes"
    return shipped if (shipped / RECIPE_PRESETS).is_dir() else PACKAGE.parent / "recipes"


def presets() -> dict[str, Path]:
    """Preset name → recipe YAML (``tiny`` → recipes/zephyr_style/tiny.yaml)."""
    return {path.stem: path for path in sorted((recipes_folder() / RECIPE_PRESETS).glob("*.yaml"))}


def accelerate_configs() -> dict[str, Path]:
    """Name → accelerate config (``deepspeed_zero3`` → recipes/accelerate_configs/deepspeed_zero3.yaml)."""
    return {path.stem: path for path in sorted((recipes_folder() / ACCELERATE_CONFIGS).glob("*.yaml"))}


def describe(path: Path) -> str:
    """The first comment line of a preset: what it is."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip().rstrip(",:\\ ")
    return ""


def resolve_config(value: str) -> str:
    """A ``--config`` value as a path: an existing file as given, else the shipped preset of that name."""
    if Path(value).is_file():
        return value
    found = presets()
    name = (
        Path(value).stem if value.endswith((".yaml", ".yml")) and Path(value).parent.name == RECIPE_PRESETS else value
    )
    if name in found:
        return str(found[name])
    raise ConfigError(
        f"--config {value!r}: no such file, and no preset of that name; presets: {', '.join(found) or 'none'} "
        "(`dpo-recipes presets` lists them with their paths)"
    )


def with_preset_configs(argv: list[str]) -> list[str]:
    """``argv`` with every ``--config NAME`` (or ``--config=NAME``) replaced by the path it resolves to."""
    resolved = list(argv)
    for index, item in enumerate(resolved):
        if item == "--config" and index + 1 < len(resolved):
            resolved[index + 1] = resolve_config(resolved[index + 1])
        elif item.startswith("--config="):
            resolved[index] = "--config=" + resolve_config(item.removeprefix("--config="))
    return resolved
