"""The layout docs/architecture.md describes, checked on the source: layers import only downwards (so there is no import
cycle), and every private member of TRL, transformers or accelerate is used in one module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dpo_recipes"

# Bottom first. A module may import modules of its own package or of packages below it, never above; within a
# package the modules may use one another (without a cycle: see below).
LAYERS = ["core", "worlds", "data", "evaluation", "trainer", "crosscheck", "training", "cli"]
TOP_LEVEL = {"cli", "__main__", ""}  # the modules beside the packages: the command line, and the package itself

# The cross-check's value is its independence from TRL: its from-scratch side reaches no module that imports TRL,
# directly or through another module. Only these three put TRL's trainer beside it, and check_data loads the fixed
# batch through the data recipes (the trl recipe compares its prompt split with TRL's extract_prompt).
CROSSCHECK_TRL_SIDE = {"crosscheck.verify", "crosscheck.paths", "crosscheck.runner", "crosscheck.check_data"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def internal_imports(path: Path) -> set[str]:
    """Every dpo_recipes module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dpo_recipes"):
            base = node.module.removeprefix("dpo_recipes").lstrip(".")
            for alias in node.names:  # `from dpo_recipes import embedded` imports a module
                candidate = f"{base}.{alias.name}".lstrip(".")
                is_module = (PACKAGE / candidate.replace(".", "/")).with_suffix(".py").exists()
                found.add(candidate if is_module else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("dpo_recipes.") for a in node.names if a.name.startswith("dpo_recipes.")}
    return found - {module_name(path), ""}


GRAPH = {module_name(path): internal_imports(path) for path in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    return LAYERS.index("cli" if module in TOP_LEVEL else module.split(".")[0])


def test_every_module_is_in_a_package_of_the_layers():
    assert [module for module in GRAPH if module not in TOP_LEVEL and module.split(".")[0] not in LAYERS] == []
    assert [path.name for path in PACKAGE.glob("*.py")] and len(list(PACKAGE.glob("*.py"))) <= 5


def test_imports_only_go_down():
    upward = [
        f"{module} imports {target} (a package above it)"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def imports_trl(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "trl":
            return True
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == "trl" for alias in node.names):
            return True
    return False


def reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for target in GRAPH.get(todo.pop(), ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def module_path(module: str) -> Path:
    path = PACKAGE / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def test_the_crosschecks_from_scratch_side_reaches_no_trl():
    from_scratch = [m for m in GRAPH if m.split(".")[0] == "crosscheck" and m not in CROSSCHECK_TRL_SIDE]
    assert "crosscheck.losses" in from_scratch and "crosscheck.tolerances" in from_scratch
    reaching = {
        module: sorted(m for m in {module} | reachable(module) if imports_trl(module_path(m)))
        for module in from_scratch
    }
    assert {module: found for module, found in reaching.items() if found} == {}
    assert imports_trl(module_path("crosscheck.runner"))  # the scan sees TRL where it is imported


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_there_is_no_import_cycle():
    assert find_cycle(GRAPH) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def private_uses(path: Path) -> list[str]:
    """``x._name`` (x not self/cls), getattr/setattr/hasattr with a "_name", and ``from m import _name``."""
    uses = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if ast.unparse(node.value) not in ("self", "cls"):
                uses.append(f"{ast.unparse(node)} (line {node.lineno})")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "setattr", "hasattr"):
            name = node.args[1] if len(node.args) > 1 else None
            if (
                isinstance(name, ast.Constant)
                and str(name.value).startswith("_")
                and not str(name.value).startswith("__")
            ):
                uses.append(f"{node.func.id}(…, {name.value!r}) (line {node.lineno})")
        elif isinstance(node, ast.ImportFrom) and any(a.name.startswith("_") for a in node.names):
            uses.append(f"from {node.module} import … (line {node.lineno})")
    return uses


def test_private_members_of_libraries_are_used_only_in_trl_internals():
    root = PACKAGE.parent
    sources = [*PACKAGE.rglob("*.py"), *(root / "recipes").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]
    outside = {
        str(p.relative_to(root)): uses for p in sources if p.name != "trl_internals.py" if (uses := private_uses(p))
    }
    assert outside == {}
    assert private_uses(PACKAGE / "core" / "trl_internals.py")  # the scan sees them where they are


def test_trl_internals_refuses_versions_it_was_not_written_for():
    from dpo_recipes.core.trl_internals import unsupported_versions

    assert unsupported_versions({"trl": "1.16.0", "accelerate": "1.15.0"}) == []
    assert unsupported_versions({"trl": "1.17.0"}) == ["trl 1.17.0 (this module supports >=1.16,<1.17)"]
    assert len(unsupported_versions({"trl": "1.15.2", "accelerate": "2.0.0"})) == 2


def test_building_a_trainer_leaves_the_callers_config_as_given(tmp_path, tiny_sft_path):
    from datasets import Dataset
    from trl import DPOConfig, ModelConfig

    from dpo_recipes.trainer.build import build_dpo_trainer

    args = DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        precompute_ref_log_probs=True,
        train_sampling_strategy="group_by_length",
    )
    names = ("model_init_kwargs", "precompute_ref_log_probs", "remove_unused_columns")
    before = {name: getattr(args, name) for name in names}
    pairs = Dataset.from_list([{"prompt": "The red lamp", "chosen": " is great.", "rejected": " is bad."}] * 2)
    trainer = build_dpo_trainer(ModelConfig(model_name_or_path=tiny_sft_path), args, pairs)
    assert {name: getattr(args, name) for name in names} == before
    assert trainer.args is not args and not trainer.args.remove_unused_columns  # the length column reaches the sampler
    assert trainer.precompute_ref_logps and "ref_chosen_logps" in trainer.train_dataset.column_names


def test_the_formatter_is_the_style_without_exceptions():
    root = PACKAGE.parent
    sources = [
        path for folder in ("dpo_recipes", "recipes", "benchmarks", "tests") for path in (root / folder).rglob("*.py")
    ]
    marker = "fmt: " + "skip"  # spelled apart, so this file does not hold it
    assert [str(p.relative_to(root)) for p in sources if marker in p.read_text()] == []


def test_the_command_line_and_a_data_conversion_import_no_torch(tmp_path):
    """`dpo-recipes data convert` runs at the speed of `datasets` (benchmarks/data_path.py): importing torch,
    transformers, peft or accelerate would cost it seconds and hundreds of MiB before the first row."""
    import subprocess
    import sys

    fixture = Path(__file__).resolve().parent / "fixtures" / "hh_rlhf.jsonl"
    argv = ["data", "convert", str(fixture), "--recipe", "hh_rlhf", "--split", "train", "--on-bad-row", "skip"]
    code = (
        f"import sys\nfrom dpo_recipes.cli import main\nmain({[*argv, str(tmp_path / 'out')]!r})\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"
    assert any((tmp_path / "out").iterdir())
