"""Evaluate a trained run directory: win rate across temperatures, KL to the reference, held-out implicit
reward, lengths, side-by-side answers. Written to evaluation.json, win_rate_vs_temperature.png and report.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_write_text
from dpo_recipes.core.generation import decode, generate_ids
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.core.scoring import as_reference, sequence_logps, trl_token_ids
from dpo_recipes.data import get_recipe, load_preference_splits
from dpo_recipes.evaluation import MAX_PAIRS
from dpo_recipes.evaluation.comparison import (
    compare_across_temperatures,
    kl_to_reference,
    mean_and_stderr,
    unique_prompts,
)
from dpo_recipes.evaluation.reporting import pyplot, quality_lines, save_figure, side_by_side, temperature_table
from dpo_recipes.worlds import embedded
from dpo_recipes.worlds.judges import get_judge, second_judge_name

TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
SECTION_START, SECTION_END = "<!-- dpo-recipes evaluate -->", "<!-- /dpo-recipes evaluate -->"


def evaluation_device() -> str:
    """Where a saved run is measured: the GPU when there is one (where it trained), else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load_causal_lm(name: str, quantization: dict | None, device: str):
    """A model as the run trained it: 4-bit (or 8-bit) again when it was, on ``device``."""
    if quantization:
        config = BitsAndBytesConfig.from_dict(quantization)
        return AutoModelForCausalLM.from_pretrained(name, quantization_config=config, device_map={"": device})
    return AutoModelForCausalLM.from_pretrained(name).to(device)


def load_run(run_dir: str | Path, base_model: str | None = None, device: str | None = None):
    """(policy, reference or None, tokenizer, run record or None), loaded as the run trained them: a QLoRA
    adapter on its base quantized the same way (an adapter trained against 4-bit weights, applied to full ones,
    would be another policy), on the GPU when there is one. A LoRA run is its base + adapter (the reference is
    the adapter disabled); a full run needs its reference, ``base_model`` or the run's own model."""
    run_dir, device = Path(run_dir), device or evaluation_device()
    info = RunRecord.from_dir(run_dir)
    base = base_model or (info.model if info else None)
    quantization = info.quantization if info else None
    tokenizer = AutoTokenizer.from_pretrained(
        run_dir if (run_dir / "tokenizer_config.json").exists() else embedded.resolve(base)
    )
    if (run_dir / "adapter_config.json").exists():
        base = base or json.loads((run_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(_load_causal_lm(embedded.resolve(base), quantization, device), run_dir)
        return model.eval(), None, tokenizer, info
    if base is None:
        raise ConfigError(f"{run_dir}: a full-model run needs its reference model (pass base_model)")
    reference = _load_causal_lm(embedded.resolve(base), quantization, device).eval()
    return _load_causal_lm(str(run_dir), None, device).eval(), reference, tokenizer, info


def truncated(prompt: list[int], full: list[int], max_length: int | None, mode: str) -> tuple[list[int], list[int]]:
    """A (prompt ids, full ids) pair cut to TRL's ``max_length`` as TRL cuts it: keep_start keeps the first
    tokens, keep_end the last (the prompt loses its start first)."""
    if max_length is None or len(full) <= max_length:
        return prompt, full
    if mode == "keep_end":
        cut = len(full) - max_length
        return prompt[cut:], full[cut:]
    return prompt[:max_length], full[:max_length]


def implicit_reward(
    model, tokenizer, rows: list[dict], beta: float, ref_model=None, max_length=None, truncation_mode="keep_start"
) -> dict:
    """Held-out implicit reward β(log π − log π_ref) of chosen and rejected: accuracy (strict, as TRL) and margin,
    on the pairs as the run's max_length truncated them in training."""
    sides = {
        side: [truncated(*trl_token_ids(tokenizer, r["prompt"], r[side]), max_length, truncation_mode) for r in rows]
        for side in ("chosen", "rejected")
    }
    policy = {side: sequence_logps(model, ids, tokenizer.pad_token_id) for side, ids in sides.items()}
    with as_reference(model, ref_model) as reference_model:
        reference = {side: sequence_logps(reference_model, ids, tokenizer.pad_token_id) for side, ids in sides.items()}
    chosen = beta * (policy["chosen"] - reference["chosen"])
    rejected = beta * (policy["rejected"] - reference["rejected"])
    return {
        "n": len(rows),
        "accuracy": (chosen > rejected).double().mean().item(),
        "margin": (chosen - rejected).mean().item(),
        "chosen": chosen.mean().item(),
        "rejected": rejected.mean().item(),
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    judge: str | None = None,
    second_judge: str | None = None,
    temperatures=TEMPERATURES,
    n_prompts: int = 100,
    max_new_tokens: int = 48,
    seed: int = 0,
    base_model: str | None = None,
    dataset: str | None = None,
    recipe: str | None = None,
    split: str | None = None,
    max_pairs: int | None = MAX_PAIRS,
) -> dict:
    """Everything in the module docstring, for the run in ``run_dir``; the judge and the held-out data default to
    the run's own."""
    run_dir = Path(run_dir)
    model, ref_model, tokenizer, info = load_run(run_dir, base_model)
    recipe = recipe or (info.dataset_recipe if info else "ultrafeedback_binarized")
    dataset = dataset or (info.dataset if info else embedded.WORLD)
    split = split or (info.test_split if info else get_recipe(recipe).splits[-1])
    test = load_preference_splits(dataset, recipe, {"test": split}, max_rows={"test": max_pairs})["test"].dataset
    prompts = unique_prompts(test, n_prompts)
    judge = judge or (info and info.judge) or "toy-world"
    score, second = get_judge(judge), second_judge_name(judge, second_judge)
    measured, comparisons = compare_across_temperatures(
        model,
        tokenizer,
        prompts,
        score,
        ref_model,
        temperatures,
        max_new_tokens,
        seed,
        (second, get_judge(second)) if second else None,
    )
    results = {"run_dir": str(run_dir), "judge": judge, "dataset": dataset, "split": split, **measured}
    beta = info.beta if info else 0.1
    lengths = (info.max_length, info.truncation_mode) if info else (None, "keep_start")
    reward = implicit_reward(model, tokenizer, test.to_list(), beta, ref_model, *lengths)
    results["implicit_reward"] = {"beta": beta, **reward}
    atomic_write_text(run_dir / "evaluation.json", json.dumps(results, indent=2) + "\n")
    plot_win_rate_vs_temperature({run_dir.name: results}, run_dir / "win_rate_vs_temperature.png")
    _write_report_section(run_dir / "report.md", results, comparisons[temperatures[0]])
    return results


def frontier_point(model, tokenizer, prompts, judge, ref_model=None, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """One point of the reward–KL frontier (the DPO paper's IMDb figure): the judged reward of the policy's
    own samples at temperature 1, and its KL to the reference on the same samples, each with its stderr."""
    samples = generate_ids(model, tokenizer, prompts, max_new_tokens, temperature=1.0, seed=seed, desc="Samples")
    texts = decode(tokenizer, samples)
    rewards = mean_and_stderr(torch.tensor([judge(p, t) for p, t in zip(prompts, texts, strict=True)]))
    kl = kl_to_reference(model, tokenizer, prompts, samples, ref_model)
    return {"reward": rewards.mean, "reward_stderr": rewards.stderr, "kl": kl.mean, "kl_stderr": kl.stderr}


def best_of_n_point(model, tokenizer, prompts, judge, n: int, max_new_tokens: int = 48, seed: int = 0) -> dict:
    """Best-of-n sampling from ``model`` (a non-DPO comparison): the mean judged reward of the best of n
    samples per prompt; its KL to ``model`` is log n − (n − 1)/n (Stiennon et al. 2020, Appendix)."""
    samples = decode(
        tokenizer,
        generate_ids(model, tokenizer, prompts, max_new_tokens, 1.0, seed, samples_per_prompt=n, desc=f"Best-of-{n}"),
    )
    best = [max(judge(p, t) for t in samples[i * n : (i + 1) * n]) for i, p in enumerate(prompts)]
    rewards = mean_and_stderr(torch.tensor(best))
    return {
        "n": n,
        "reward": rewards.mean,
        "reward_stderr": rewards.stderr,
        "kl": math.log(n) - (n - 1) / n,
        "kl_stderr": 0.0,
    }


def plot_win_rate_vs_temperature(runs: dict[str, dict], path: Path) -> Path:
    """Win rate (with its 95% interval) against sampling temperature, one line per run."""
    figure, axis = pyplot().subplots(figsize=(5.5, 3.8), constrained_layout=True)
    for label, results in runs.items():
        points = results["temperatures"]
        rates = [p["win_rate"] for p in points]
        errors = [
            [max(0.0, r - p["ci95"][0]) for r, p in zip(rates, points, strict=True)],
            [max(0.0, p["ci95"][1] - r) for r, p in zip(rates, points, strict=True)],
        ]
        axis.errorbar([p["temperature"] for p in points], rates, yerr=errors, marker="o", capsize=3, label=label)
    axis.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    axis.set(xlabel="sampling temperature", ylabel="win rate vs reference", ylim=(0, 1.05))
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return save_figure(figure, path)


def plot_frontier(runs: dict[str, list[dict]], reference: dict, best_of_n: list[dict], path: Path) -> Path:
    """Ground-truth reward against KL to the reference: one line per DPO run (its checkpoints in order), the
    reference itself at KL 0, and best-of-n sampling from the reference."""
    figure, axis = pyplot().subplots(figsize=(6.5, 4.2), constrained_layout=True)
    for label, points in runs.items():
        axis.errorbar(
            [p["kl"] for p in points],
            [p["reward"] for p in points],
            xerr=[p["kl_stderr"] for p in points],
            yerr=[p["reward_stderr"] for p in points],
            marker="o",
            capsize=2,
            label=label,
        )
    axis.plot(
        [0.0] + [p["kl"] for p in best_of_n],
        [reference["reward"]] + [p["reward"] for p in best_of_n],
        "k--s",
        label="best-of-n from the reference (n = 1, …)",
    )
    axis.plot([0.0], [reference["reward"]], "k*", markersize=12, label="reference (SFT)")
    axis.set(xlabel="KL(policy ‖ reference), nats", ylabel="ground-truth reward of samples (T = 1)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return save_figure(figure, path)


def _write_report_section(path: Path, results: dict, comparison) -> None:
    kl, implicit = results["kl"], results["implicit_reward"]
    lines = [
        SECTION_START,
        "## Evaluation (`dpo-recipes evaluate`)",
        "",
        f"Judge `{results['judge']}`; {results['temperatures'][0]['n']} held-out prompts of {results['dataset']}"
        f"[{results['split']}]; ties count ½; 95% Wilson intervals.",
        "",
        temperature_table(results["temperatures"]),
        "",
        *quality_lines(results.get("quality")),
    ]
    lines += [
        "",
        f"KL(policy ‖ reference), sequence level, from {results['temperatures'][0]['n']} policy samples at "
        f"temperature 1: **{kl['mean']:.3f} ± {kl['stderr']:.3f}** nats (mean ± standard error).",
        "",
        f"Held-out implicit reward (β = {implicit['beta']:g}, {implicit['n']} pairs, from scratch): accuracy "
        f"{implicit['accuracy']:.3f}, mean margin {implicit['margin']:.3f}.",
        "",
        f"### Side by side (temperature {results['temperatures'][0]['temperature']:g})",
        "",
        side_by_side(comparison),
        "",
        "![win rate vs temperature](win_rate_vs_temperature.png)",
        SECTION_END,
    ]
    section = "\n".join(lines)
    text = path.read_text() if path.exists() else ""
    if SECTION_START in text:  # re-running replaces the section
        head, rest = text.split(SECTION_START, 1)
        text = head + section + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(path, text)
