"""The GPU path in one command: QLoRA DPO for a few steps in fp16 and in bf16, then `evaluate` on a few prompts.

    python benchmarks/gpu_smoke.py                      # on any CUDA machine (offline: the embedded models)
    python benchmarks/gpu_smoke.py --model Qwen/Qwen2.5-0.5B-Instruct --dataset HuggingFaceH4/ultrafeedback_binarized
    python benchmarks/gpu_smoke.py --cpu                # the same plumbing on a CPU, float32 only (the tests run it)

It trains the `qlora_colab` preset's policy kind (4-bit NF4 base, LoRA adapters) with each precision the GPU
has (fp16 always: the T4's; bf16 where the hardware computes in it), evaluates the run where it trained, and
prints seconds per step and peak GPU memory (``torch.cuda.max_memory_allocated``) for each. The results go to
``benchmarks/results/gpu_smoke_<device>.json``. Run it whenever a CUDA machine is at hand: the CPU suite cannot
show GPU-only failures (dtype rules, memory).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dpo_recipes.core.files import atomic_write_text
from dpo_recipes.evaluation.run_eval import evaluate_run
from dpo_recipes.training.train import run_from_command_line

RESULTS = Path(__file__).parent / "results"


def precisions(cpu: bool) -> list[str]:
    if cpu:
        return ["fp32"]
    return ["fp16", "bf16"] if torch.cuda.is_bf16_supported(including_emulation=False) else ["fp16"]


def one_run(precision: str, args, output_dir: Path) -> dict:
    flags = {"fp16": ["--fp16", "true", "--bf16", "false"], "bf16": ["--bf16", "true", "--fp16", "false"]}
    argv = [
        "--config",
        "tiny",
        "--model_name_or_path",
        args.model,
        "--dataset_name",
        args.dataset,
        "--dataset_recipe",
        args.recipe,
        "--load_in_4bit",
        "true",
        "--bnb_4bit_quant_type",
        "nf4",
        "--max_steps",
        str(args.steps),
        "--per_device_train_batch_size",
        "4",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "16",
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--judge",
        "",
        "--crosscheck",
        "false",
        "--output_dir",
        str(output_dir),
        "--use_cpu",
        str(args.cpu).lower(),
        *flags.get(precision, ["--fp16", "false", "--bf16", "false"]),
    ]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.time()
    metrics = run_from_command_line(argv)
    trained = time.time() - started
    evaluation = evaluate_run(output_dir, judge=args.judge, temperatures=(0.0, 1.0), n_prompts=8, max_new_tokens=24)
    return {
        "precision": precision,
        "steps": metrics["train"]["global_step"],
        "s_per_step": metrics["wall_time_s"]["train"] / max(1, metrics["train"]["global_step"]),
        "run_s": trained,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "weights_changed": metrics["train"]["weights_changed"],
        "eval_win_rate_greedy": evaluation["temperatures"][0]["win_rate"],
    }


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="dpo-recipes/tiny-zephyr-sft", help="model (hub id, path, embedded)")
    parser.add_argument("--dataset", default="dpo-recipes/toy-world", help="dataset (hub id, path, embedded)")
    parser.add_argument("--recipe", default="ultrafeedback_binarized", help="its dataset recipe")
    parser.add_argument("--judge", default="toy-world", help="the judge of the evaluation")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps per precision")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU in float32 (a check of the plumbing)")
    parser.add_argument("--output", type=Path, help="where the JSON goes (default benchmarks/results/...)")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/gpu-smoke"), help="where the runs go")
    args = parser.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: no CUDA GPU here (pass --cpu to check the plumbing on the CPU)")
    device = "cpu" if args.cpu else torch.cuda.get_device_name(0).replace(" ", "_").lower()
    rows = [one_run(precision, args, args.work_dir / precision) for precision in precisions(args.cpu)]
    print(f"{'precision':<10} {'s/step':>8} {'peak GiB':>9} {'trained':>8} {'greedy win rate':>16}")
    for row in rows:
        peak = "-" if row["peak_gpu_memory_gib"] is None else f"{row['peak_gpu_memory_gib']:.2f}"
        print(
            f"{row['precision']:<10} {row['s_per_step']:>8.2f} {peak:>9} {row['weights_changed']!s:>8} "
            f"{row['eval_win_rate_greedy']:>16.3f}"
        )
    result = {"device": device, "torch": torch.__version__, "model": args.model, "rows": rows}
    output = args.output or RESULTS / f"gpu_smoke_{device}.json"
    atomic_write_text(output, json.dumps(result, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
