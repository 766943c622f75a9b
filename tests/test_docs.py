"""The documents a user reads name only things that exist: every link (file and heading), every command in a
shell block (make targets, `dpo-recipes` subcommands and their flags, presets, scripts and their flags), and
every flag written in running text. The README stays one screen and starts with the two set-up commands."""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [REPO / "README.md", REPO / "CONTRIBUTING.md", *REPO.glob("docs/*.md"), *(REPO / "recipes").rglob("README.md")]
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LAUNCHERS = {"accelerate", "torchrun", "deepspeed"}
# Flags of other programs that the documents mention in running text (pip, accelerate, torchrun, pytest, git).
OTHER_PROGRAMS_FLAGS = {
    "--no-deps",
    "--index-url",
    "--config_file",
    "--num_processes",
    "--num_machines",
    "--mixed_precision",
    "--machine_rank",
    "--main_process_ip",
    "--nproc_per_node",
    "--nnodes",
    "--node_rank",
    "--master_addr",
    "--master_port",
    "--standalone",
    "--cpu",
    "--doctest-modules",
}


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


def test_the_readme_is_one_screen_and_starts_with_the_two_set_up_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    language, first_block = FENCE.search(text).groups()
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert language == "bash" and commands == ["make smollm2", "make test"]
    assert text.index("```") < text.index("\n## ")  # before anything else


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_every_link_names_a_file_and_heading_that_exist(document):
    broken = []
    for target in links(document):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked offline
            continue
        name, _, anchor = target.partition("#")
        path = (document.parent / name).resolve() if name else document
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {relative(path)}")
    assert broken == []


def test_every_docs_page_is_reachable_from_the_readme():
    seen, todo = set(), [REPO / "README.md"]
    while todo:
        page = todo.pop()
        if page in seen:
            continue
        seen.add(page)
        for target in links(page):
            name = target.partition("#")[0]
            if name.endswith(".md") and not re.match(r"[a-z]+:", name):
                todo.append((page.parent / name).resolve())
    assert sorted(relative(page) for page in REPO.glob("docs/*.md") if page.resolve() not in seen) == []


@cache
def cli_options() -> dict[tuple[str, ...], set[str]]:
    """Each `dpo-recipes` subcommand path (("data", "doctor"), …) and its option strings."""
    import argparse

    from dpo_recipes.cli import make_parser

    found = {}

    def walk(parser, path):
        found[path] = {option for action in parser._actions for option in action.option_strings}
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, (*path, name))

    walk(make_parser(), ())
    found[("train",)] = found[("reference-logps",)] = training_options()
    found[("reference-logps",)] = training_options() | {"--output_file", "--output-file"}
    return found


@cache
def training_options() -> set[str]:
    """The training parser's flags (RecipeArguments, DPOConfig, ModelConfig), in both spellings as TRL's
    parser accepts them, plus --config."""
    from dpo_recipes.training.train import make_parser

    options = {option for action in make_parser()._actions for option in action.option_strings}
    return options | {option.replace("_", "-") for option in options} | {"--config"}


@cache
def makefile_targets() -> set[str]:
    return set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.MULTILINE))


def flags(tokens: list[str]) -> list[str]:
    return [token.split("=")[0] for token in tokens if token.startswith("--")]


def check_config(value: str) -> str | None:
    """A --config value: a preset name, or a path in this repository (a user's own YAML is not checked)."""
    from dpo_recipes.training.presets import presets

    if "…" in value:
        return None
    if "/" not in value and not value.endswith((".yaml", ".yml")):
        return None if value in presets() else f"--config {value}: no such preset"
    if value.startswith("recipes/") and not (REPO / value).is_file():
        return f"--config {value}: no such file"
    return None


def check_dpo_recipes(tokens: list[str]) -> list[str]:
    options, path = cli_options(), ()
    for token in tokens:
        if (*path, token) in options:
            path = (*path, token)
        elif not token.startswith("-") or path:
            break
    if not path:
        return [f"dpo-recipes {' '.join(tokens[:1])}: no such subcommand"]
    problems = [
        f"dpo-recipes {' '.join(path)} {flag}: no such option" for flag in flags(tokens) if flag not in options[path]
    ]
    return problems + [check_config(tokens[i + 1]) for i, t in enumerate(tokens[:-1]) if t == "--config"]


def check_script(script: str, arguments: list[str]) -> list[str]:
    """`python SCRIPT …`: the script exists; its flags are the training parser's (the recipe script) or appear
    in its source (argparse scripts)."""
    path = REPO / script
    if not path.is_file():
        return [f"{script}: no such file"]
    if script == "recipes/zephyr_style.py":
        known = training_options()
        problems = [f"{script} {flag}: no such option" for flag in flags(arguments) if flag not in known]
        return problems + [check_config(arguments[i + 1]) for i, t in enumerate(arguments[:-1]) if t == "--config"]
    source = path.read_text()
    return [f"{script} {flag}: not an option of it" for flag in flags(arguments) if f'"{flag}"' not in source]


def check_command(tokens: list[str]) -> list[str]:
    while tokens and re.fullmatch(r"[A-Z_]+=\S*", tokens[0]):  # VAR=value before the command
        tokens = tokens[1:]
    if not tokens or "…" in tokens[0]:
        return []
    program = tokens[0].removeprefix(".venv/bin/")
    if program in ("python", "python3") and tokens[1:3] == ["-m", "dpo_recipes"]:
        program, tokens = "dpo-recipes", ["dpo-recipes", *tokens[3:]]
    if program == "make":
        return [f"make {t}: no such target" for t in tokens[1:] if "=" not in t and t not in makefile_targets()]
    if program == "dpo-recipes":
        return check_dpo_recipes(tokens[1:])
    if program in ("python", "python3"):
        return check_script(tokens[1], tokens[2:]) if tokens[1:] and tokens[1].endswith(".py") else []
    if program in LAUNCHERS:
        scripts = [i for i, token in enumerate(tokens) if token.endswith(".py")]
        configs = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "--config_file"]
        problems = [f"--config_file {c}: no such file" for c in configs if not (REPO / c).is_file()]
        return problems + (check_script(tokens[scripts[0]], tokens[scripts[0] + 1 :]) if scripts else [])
    return []  # pip, git, cd, …: not this project's


def commands(document: Path) -> list[list[str]]:
    """The commands of the document's shell blocks (continuations joined, comments dropped, `;` split)."""
    found = []
    for language, block in FENCE.findall(document.read_text()):
        if language not in ("bash", "sh", "shell"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            command: list[str] = []
            for token in tokens:
                if token in (";", "&&", "|") or token.endswith(";"):
                    found.append(command + ([token[:-1]] if token.endswith(";") and token != ";" else []))
                    command = []
                else:
                    command.append(token)
            found.append(command)
    return [command for command in found if command]


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_every_command_names_a_target_subcommand_option_and_preset_that_exist(document):
    problems = [problem for command in commands(document) for problem in check_command(command) if problem]
    assert problems == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=relative)
def test_every_flag_in_the_text_is_an_option_of_some_command(document):
    known = training_options() | OTHER_PROGRAMS_FLAGS | set().union(*cli_options().values())
    scripts = [*REPO.glob("benchmarks/*.py"), *REPO.glob("recipes/*.py")]
    known |= {flag for script in scripts for flag in re.findall(r'"(--[\w-]+)"', script.read_text())}
    text = FENCE.sub("", document.read_text())
    written = {flag for span in INLINE_CODE.findall(text) for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", span)}
    assert sorted(written - known) == []
    for span in INLINE_CODE.findall(text):  # a command written inline is checked as one in a block
        if span.startswith(("dpo-recipes ", "make ")) and "…" not in span:
            assert [p for p in check_command(shlex.split(span)) if p] == [], span


def test_the_checker_itself_catches_what_rots():
    """A renamed flag, subcommand, preset, target or script must fail the checks above."""
    assert check_command(["dpo-recipes", "data", "doctor", "x.jsonl", "--max-rows", "5"]) == []
    assert check_command(["dpo-recipes", "data", "doctor", "x.jsonl", "--max-rowz", "5"]) != []
    assert check_command(["dpo-recipes", "dta", "list"]) != []
    assert [p for p in check_command(["dpo-recipes", "train", "--config", "tinny"]) if p] != []
    assert [p for p in check_command(["dpo-recipes", "train", "--config", "tiny", "--beta", "1"]) if p] == []
    assert check_command(["dpo-recipes", "train", "--betta", "1"]) != []
    assert check_command(["make", "smollm3"]) != [] and check_command(["make", "tiny"]) == []
    assert check_command(["python", "benchmarks/main_job.py", "--baseline", "HEAD"]) == []
    assert check_command(["python", "benchmarks/main_job.py", "--basline", "HEAD"]) != []
    assert check_command(["accelerate", "launch", "recipes/zephyr_style.py", "--max_stepz", "3"]) != []
    assert check_command(["accelerate", "launch", "--config_file", "recipes/accelerate_configs/nope.yaml"]) != []
