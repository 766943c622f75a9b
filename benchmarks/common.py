"""What every benchmark shares: locally built models of a chosen size, the toy world's pairs, timing, machine."""

from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, MistralForCausalLM, TrainerCallback
from trl import DPOConfig

from dpo_recipes.data import load_preference_splits
from dpo_recipes.worlds import embedded
from dpo_recipes.worlds.tiny_lm import tiny_config

SIZES = {
    "tiny": dict(hidden_size=64, layers=2),  # for --quick (a smoke run of the whole suite)
    "20M": dict(hidden_size=512, layers=6),
    "100M": dict(hidden_size=1024, layers=8),
}
CACHE = Path(os.environ.get("DPO_RECIPES_BENCH_CACHE", Path.home() / ".cache" / "dpo_recipes" / "bench"))


def cpu_config(output_dir: str, **settings) -> DPOConfig:
    """A DPOConfig for a timed CPU run: fp32, no saving, no logging or reporting in the loop being timed."""
    quiet = dict(bf16=False, use_cpu=True, report_to="none", save_strategy="no", logging_steps=10**6)
    return DPOConfig(output_dir=output_dir, **{**quiet, **settings})


def tokenizer():
    return AutoTokenizer.from_pretrained(embedded.resolve(embedded.TINY_SFT))


def model_path(size: str) -> str:
    """A Mistral of ``size`` (seeded random weights, the embedded tokenizer), saved once so TRL can load it."""
    path = CACHE / f"mistral-{size}"
    if not (path / "config.json").is_file():
        tok = tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = MistralForCausalLM(tiny_config(tok, **SIZES[size]))
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return str(path)


def parameters(size: str) -> int:
    config = tiny_config(tokenizer(), **SIZES[size])
    with torch.device("meta"):
        return sum(p.numel() for p in MistralForCausalLM(config).parameters())


def pairs(n: int):
    """The first ``n`` kept pairs of the toy world's train split, in TRL's conversational format."""
    split = load_preference_splits(embedded.WORLD, "ultrafeedback_binarized", {"train": "train_prefs"})["train"]
    return split.dataset.select(range(n))


def real_tokens_per_pair(dataset, tok) -> float:
    """Mean non-padding tokens of one pair as DPO processes it: prompt + chosen and prompt + rejected."""
    total = 0
    for row in dataset:
        prompt = len(tok.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)["input_ids"])
        total += 2 * prompt + sum(len(tok(row[k][0]["content"])["input_ids"]) + 1 for k in ("chosen", "rejected"))
    return total / len(dataset)


def median_blocks(stamps: list[float], warmup: int, block: int) -> tuple[float, list[float]]:
    """Seconds per block of ``block`` steps after ``warmup`` steps, from per-step end times; (median, all)."""
    times = stamps[warmup:]
    blocks = [times[i + block] - times[i] for i in range(0, len(times) - block, block)]
    return statistics.median(blocks), blocks


class StepClock(TrainerCallback):
    """End time of every optimizer step (time.perf_counter), for timing blocks of steps inside TRL's loop."""

    def __init__(self):
        self.stamps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.stamps.append(time.perf_counter())


def machine() -> dict:
    import transformers
    import trl

    return {
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "date": time.strftime("%Y-%m-%d"),
    }


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section {name}: written by benchmarks/{name}.py -->", f"<!-- end of section {name} -->"


def write_readme_section(name: str, text: str, readme: Path | None = None) -> None:
    """Put ``text`` into benchmarks/README.md between the markers of section ``name`` (replaced on a rerun,
    appended the first time); `run.py` keeps such sections when it rewrites the page."""
    from dpo_recipes.core.files import atomic_write_text

    readme = readme or Path(__file__).parent / "README.md"
    start, end = _markers(name)
    page = readme.read_text() if readme.exists() else ""
    block = f"{start}\n{text}\n{end}"
    if start in page:
        head, rest = page.split(start, 1)
        page = head + block + rest.split(end, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(readme, page)


def kept_sections(page: str) -> str:
    """Every section written by `write_readme_section` in ``page``, in order."""
    blocks = []
    for piece in page.split("<!-- section ")[1:]:
        name = piece.split(":", 1)[0]
        start, end = _markers(name)
        blocks.append(start + piece.split(start.removeprefix("<!-- section "), 1)[1].split(end, 1)[0] + end)
    return "\n\n".join(blocks)
