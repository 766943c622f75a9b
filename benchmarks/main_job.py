"""Where the main job's time goes, and generation against the hardware's bound.

1. **Generation** (SmolLM2-135M-Instruct, the 128 training review prompts, T = 0.7, 48 new tokens): the project's
   one path (`dpo_recipes.core.generation.generate_ids`: length-sorted, memory-sized batches, static KV cache,
   per-answer inverse-CDF sampling) beside transformers' sampling at batch 16, the previous path. Throughput is
   the tokens the model processes per second (padded prompt positions + every decoding slot of the batch, the
   FLOPs actually spent) against the compute bound, the measured fp32 matmul peak ÷ 2·N FLOPs per token; the
   useful tokens (the answers' own) are given beside it.
2. **The main job** (`recipes/zephyr_style/smollm2.yaml`), from an empty cache (model conversion, pairs, reference
   log-probs, the cross-check's tiny model all built) and again with the cache warm, by phase (metrics.json's
   ``wall_time_s``) and as the launcher's wall clock. With ``--baseline REF`` the same two runs of another commit
   (a git worktree, its own empty cache) give the ratios in the same session, on the same machine.

Results: a table on stdout, benchmarks/results/main_job.json, and the main-job section of benchmarks/README.md.

    python benchmarks/main_job.py [--baseline b290929] [--configs PRESET.yaml …] [--add] [--skip-runs]

``--configs recipes/zephyr_style/smollm2_gamed.yaml --add`` times the gamed preset, the main job of b290929
under another name, beside the runs already measured: the same work on both commits.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
from efficiency import matmul_peak  # noqa: E402

CONFIG = "recipes/zephyr_style/smollm2.yaml"
LAUNCH = ["-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
LAUNCH += ["--mixed_precision", "no", "--dynamo_backend", "no"]


def generation_benchmark(peak: float) -> dict:
    """The generation paths on the same prompts; FLOPs counted as 2·N per processed token. The project's path in
    float32 and, where this CPU multiplies bfloat16 natively, from its bfloat16 copy (measured against the
    bfloat16 matmul peak too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dpo_recipes.core.generation import generate_ids, generation_dtype, rows_per_batch
    from dpo_recipes.worlds import embedded
    from dpo_recipes.worlds.pairs import review_prompts

    path = embedded.resolve(embedded.SMOLLM2)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    prompts = [[{"role": "user", "content": text}] for text in review_prompts(held_out=False)[:128]]
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    lengths = sorted(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    new_tokens, bound = 48, peak / (2 * n_params)

    def processed(batch_size: int, answers: list[list[int]], sorted_prompts: bool) -> int:
        """Padded prompt positions plus batch × steps (every row computes until its batch's longest answer)."""
        order = lengths if sorted_prompts else [len(i) for i in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        total = 0
        for start in range(0, len(answers), batch_size):
            rows = answers[start : start + batch_size]
            width = max(order[start : start + batch_size])
            total += len(rows) * (width + max(len(a) for a in rows))
        return total

    def project(dtype: str) -> tuple[float, list[list[int]]]:
        started = time.perf_counter()
        answers = generate_ids(model, tokenizer, prompts, new_tokens, 0.7, seed=0, desc=dtype, dtype=dtype)
        return time.perf_counter() - started, answers

    ours_seconds, ours = project("float32")
    size = rows_per_batch(model, max(lengths), new_tokens)

    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    started, previous = time.perf_counter(), []
    with torch.no_grad():
        for start in range(0, len(texts), 16):
            batch = tokenizer(texts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
            output = model.generate(
                **batch,
                max_new_tokens=new_tokens,
                do_sample=True,
                temperature=0.7,
                top_k=0,
                top_p=1.0,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row in output[:, batch["input_ids"].shape[1] :].tolist():
                previous.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)
    previous_seconds = time.perf_counter() - started

    def summary(seconds: float, answers: list[list[int]], batch: int, sorted_prompts: bool, peak=peak) -> dict:
        tokens = processed(batch, answers, sorted_prompts)
        return {
            "seconds": seconds,
            "batch_size": batch,
            "processed_tokens_per_s": tokens / seconds,
            "useful_tokens_per_s": sum(len(a) for a in answers) / seconds,
            "share_of_compute_bound": tokens / seconds / (peak / (2 * n_params)),
            "matmul_peak_gflops": peak / 1e9,
        }

    results = {
        "parameters": n_params,
        "compute_bound_tokens_per_s": bound,
        "project": summary(ours_seconds, ours, size, True),
        "transformers_batch_16": summary(previous_seconds, previous, 16, False),
        "speedup": previous_seconds / ours_seconds,
    }
    if generation_dtype(model) == torch.bfloat16:  # this CPU multiplies bfloat16 natively: the default path
        half_seconds, half = project("bfloat16")
        half_size = rows_per_batch(model.to(torch.bfloat16), max(lengths), new_tokens)
        model.to(torch.float32)
        results["project_bfloat16"] = summary(
            half_seconds, half, half_size, True, peak=matmul_peak(dtype=torch.bfloat16)
        )
        results["speedup_bfloat16"] = previous_seconds / half_seconds
    return results


def run_main_job(checkout: Path, cache: Path, label: str, config: str = CONFIG) -> dict:
    """One main-job run of ``checkout`` with ``cache`` as its artifact and datasets cache; wall time and phases."""
    output = cache / f"run-{label}"
    env = {
        **os.environ,
        "DPO_RECIPES_CACHE": str(cache / "artifacts"),
        "HF_DATASETS_CACHE": str(cache / "datasets"),
        "PYTHONPATH": str(checkout),  # the checkout's own package, ahead of the installed one
        "TQDM_DISABLE": "1",
    }
    command = [sys.executable, *LAUNCH, "recipes/zephyr_style.py", "--config", config, "--output_dir", str(output)]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"main job ({label}) failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((output / "metrics.json").read_text())
    phases = metrics["wall_time_s"]
    return {"wall_clock_s": seconds, "phases_s": phases if isinstance(phases, dict) else {"total": phases}}


def main_job_benchmark(baseline: str | None, configs: list[str]) -> dict:
    """First run and rerun of each of this commit's ``configs``, and of the baseline's own main job."""
    results = {}
    checkouts = {f"this commit, {Path(config).name}": (REPO, config) for config in configs}
    with tempfile.TemporaryDirectory(prefix="dpo-main-job-") as scratch:
        scratch = Path(scratch)
        if baseline:
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(scratch / "baseline"), baseline], cwd=REPO, check=True
            )
            checkouts[f"baseline {baseline}"] = (scratch / "baseline", CONFIG)
        try:
            for label, (checkout, config) in checkouts.items():
                cache = scratch / label.replace(" ", "-").replace(",", "")
                first = run_main_job(checkout, cache, "first", config)
                rerun = run_main_job(checkout, cache, "rerun", config)
                results[label] = {"first_run": first, "rerun": rerun}
        finally:
            if baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(scratch / "baseline")], cwd=REPO)
    return results


def section(results: dict) -> str:
    machine, peak, gen = results["machine"], results["matmul_peak_gflops"], results["generation"]
    lines = [
        "## The main job and generation (`benchmarks/main_job.py`)",
        "",
        f"Machine: {machine['cpu']}, {machine['threads']} threads, fp32 matmul peak **{peak:.0f} GFLOP/s**; "
        f"torch {machine['torch']}; {machine['date']}.",
        "",
        f"Generation, SmolLM2-135M ({gen['parameters'] / 1e6:.1f}M parameters), 128 prompts × 48 new tokens at "
        f"T = 0.7; compute bound {gen['compute_bound_tokens_per_s']:.0f} tokens/s (peak ÷ 2·N):",
        "",
        "| path | batch | time | processed tokens/s | share of the bound (its dtype's peak) | answer tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    paths = [("transformers sampling, batch 16 (previous)", "transformers_batch_16"), ("project, float32", "project")]
    paths += [("project, bfloat16 copy (the default on this CPU)", "project_bfloat16")] * ("project_bfloat16" in gen)
    for name, key in paths:
        g = gen[key]
        lines.append(
            f"| {name} | {g['batch_size']} | {g['seconds']:.1f} s | {g['processed_tokens_per_s']:.0f} "
            f"| **{g['share_of_compute_bound']:.0%}** of {g.get('matmul_peak_gflops', peak):.0f} GFLOP/s "
            f"| {g['useful_tokens_per_s']:.0f} |"
        )
    lines += ["", f"Speed-up: **{gen['speedup']:.2f}×** on the same prompts (float32)."]
    if "project_bfloat16" in gen:
        lines += [f"From the bfloat16 copy: **{gen['speedup_bfloat16']:.2f}×** (other draws, same sampler)."]
    lines += [""]
    runs = results.get("main_job", {})
    if runs:
        lines += ["| main job | first run (empty cache) | rerun (warm cache) | phases of the first run (s) |"]
        lines += ["|---|---|---|---|"]
        for label, run in runs.items():
            phases = ", ".join(f"{k} {v:.0f}" for k, v in run["first_run"]["phases_s"].items())
            lines.append(
                f"| {label} | {run['first_run']['wall_clock_s']:.0f} s | {run['rerun']['wall_clock_s']:.0f} s "
                f"| {phases} |"
            )
        base = next((run for label, run in runs.items() if label.startswith("baseline")), None)
        for label, ours in runs.items():
            if base is None or ours is base:
                continue
            first = ours["first_run"]["wall_clock_s"] / base["first_run"]["wall_clock_s"]
            rerun = ours["rerun"]["wall_clock_s"] / base["first_run"]["wall_clock_s"]
            lines += [
                "",
                f"{label} against the baseline's first run: first run **{first:.2f}×** (target ≤ 0.5), rerun "
                f"**{rerun:.2f}×** (target ≤ 0.35); rerun against the baseline's rerun "
                f"{ours['rerun']['wall_clock_s'] / base['rerun']['wall_clock_s']:.2f}×.",
            ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="a commit to compare with (run from a git worktree of it)")
    parser.add_argument("--skip-runs", action="store_true", help="measure generation only (about 2 minutes)")
    parser.add_argument(
        "--configs", nargs="+", default=[CONFIG], help=f"this commit's presets to time (default {CONFIG})"
    )
    parser.add_argument(
        "--add",
        action="store_true",
        help="keep the main-job runs already in results/main_job.json and add these (a second invocation of one "
        "session, e.g. another preset against the same baseline)",
    )
    args = parser.parse_args()
    from dpo_recipes.core.runtime import configure_threads

    configure_threads()
    peak = matmul_peak()
    results = {"machine": common.machine(), "matmul_peak_gflops": peak / 1e9, "generation": generation_benchmark(peak)}
    out = HERE / "results" / "main_job.json"
    if not args.skip_runs:
        earlier = json.loads(out.read_text()).get("main_job", {}) if args.add and out.is_file() else {}
        results["main_job"] = {**earlier, **main_job_benchmark(args.baseline, args.configs)}
    out.write_text(json.dumps(results, indent=2) + "\n")
    text = section(results)
    common.write_readme_section("main_job", text)
    print(text + f"\n\nWrote {out} and the main-job section of {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
