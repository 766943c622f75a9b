"""The real model's DPO step: SmolLM2-135M-Instruct on its own judged review pairs (the main job's data).

    python benchmarks/real_model.py                       # CPU: the main job's policy and its alternatives
    python benchmarks/real_model.py --device cuda         # a GPU: adds full fine-tuning and bf16

Each variant runs in its own process (so peak memory is its own): TRL's DPOTrainer for 1 warm-up and ``--steps``
timed steps at batch ``--batch``. Reported: seconds per step, real (non-padding) tokens per second, peak memory
(resident set on CPU, ``torch.cuda.max_memory_allocated`` on a GPU), and achieved FLOP/s against this machine's
measured matmul peak (fp32 on CPU, bf16 on a GPU). FLOPs counted as in efficiency.py: 2·N per token forward,
4·N backward, N = 134.5M parameters, padding included (the hardware computes on it); a LoRA step still runs the
full backward through the activations (2·N·T for the input gradients) but not the weight gradients, so it is
counted as 2·N (reference) + 2·N (policy forward) + 2·N (input gradients) per token, the full fine-tune as
8·N. A packed variant computes on the real tokens only, so its hardware FLOPs are counted on them; the last
column counts every variant on its real tokens (model FLOPs utilization: the work that trains). With
``--random-weights`` the model is built from the checkpoint's config with random weights: speed and memory do
not depend on the values (for a machine that has the config and tokenizer but not the weights).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

TOP_10 = r".*\.layers\.(2[0-9])\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"
ALL_LINEAR = r".*\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"
VARIANTS = {  # name -> (ModelConfig keywords, DPOConfig keywords, FLOPs per token in units of N)
    "lora, all 30 blocks": (dict(use_peft=True, lora_target_modules=ALL_LINEAR), {}, 6),
    "lora, top 10 blocks (main job)": (dict(use_peft=True, lora_target_modules=TOP_10), {}, 6),
    "lora, top 10 blocks + cached reference": (
        dict(use_peft=True, lora_target_modules=TOP_10),
        dict(precompute_ref_log_probs=True),
        4,
    ),
    "lora, top 10 blocks, packed": (dict(use_peft=True, lora_target_modules=TOP_10), dict(pack_sequences=True), 6),
    "lora, top 10 blocks, packed + cached reference": (
        dict(use_peft=True, lora_target_modules=TOP_10),
        dict(pack_sequences=True, precompute_ref_log_probs=True),
        4,
    ),
    "qlora (NF4), all 30 blocks": (dict(use_peft=True, lora_target_modules=ALL_LINEAR, load_in_4bit=True), {}, 6),
}
GPU_VARIANTS = {
    "full fine-tune": (dict(), {}, 8),
    "lora, all 30 blocks, bf16": (
        dict(use_peft=True, lora_target_modules=ALL_LINEAR, dtype="bfloat16"),
        dict(bf16=True),
        6,
    ),
}


def matmul_peak(device: str) -> float:
    import torch

    n, dtype = (8192, torch.bfloat16) if device == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(10):
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def model_and_pairs(args) -> tuple[str, object]:
    from dpo_recipes.data import load_preference_splits
    from dpo_recipes.worlds import embedded

    model = args.model or embedded.resolve(embedded.SMOLLM2)
    pairs = args.pairs or embedded.resolve(embedded.REVIEW_PAIRS)
    if args.random_weights:  # same config and tokenizer, random weights, saved where TRL can load them
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        target = Path(args.random_weights)
        if not (target / "model.safetensors").is_file():
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).save_pretrained(target)
            AutoTokenizer.from_pretrained(model).save_pretrained(target)
        model = str(target)
    split = load_preference_splits(pairs, "ultrafeedback_binarized", {"train": "train_prefs"})["train"].dataset
    return model, split


def run_variant(args) -> dict:
    import common
    import torch
    from datasets import concatenate_datasets
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import DPOConfig, ModelConfig

    from dpo_recipes.trainer.build import build_dpo_trainer

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    variants = {**VARIANTS, **GPU_VARIANTS}
    model_kw, dpo_kw, flops_per_n = (dict(part) if isinstance(part, dict) else part for part in variants[args.variant])
    pack = dpo_kw.pop("pack_sequences", False)
    model, pairs = model_and_pairs(args)
    steps = 1 + args.steps
    clock = common.StepClock()
    dpo = DPOConfig(
        output_dir="/tmp/dpo-bench-real",
        per_device_train_batch_size=args.batch,
        max_steps=steps,
        max_length=128,
        use_cpu=args.device == "cpu",
        report_to="none",
        save_strategy="no",
        logging_steps=10**6,
        bf16=dpo_kw.pop("bf16", False),
        **dpo_kw,
    )
    model_args = ModelConfig(
        model_name_or_path=model, dtype=model_kw.pop("dtype", "float32"), lora_r=16, lora_alpha=32, **model_kw
    )
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    needed = args.batch * steps  # pairs repeat when a run needs more than the 127 there are
    pairs = concatenate_datasets([pairs] * -(-needed // len(pairs))).select(range(needed))
    trainer = build_dpo_trainer(model_args, dpo, pairs, pack_sequences=pack, callbacks=[clock])
    padded, real = [], []
    for batch in trainer.get_train_dataloader():
        padded.append(batch["attention_mask"].numel())
        real.append(int(batch["attention_mask"].sum()))
    trainer.train()
    seconds, _ = common.median_blocks(clock.stamps, 1, 1)
    with torch.device("meta"):  # the model's own size: 4-bit weights report packed bytes in numel()
        parameters = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).num_parameters()
    tokens = sorted(padded[1:])[len(padded[1:]) // 2]
    real_per_step = sum(real[1:]) / len(real[1:])
    if pack:  # the model computes on the real tokens only (rows of packed sequences)
        tokens = real_per_step
    peak = (
        torch.cuda.max_memory_allocated()
        if args.device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    return {
        "variant": args.variant,
        "s/step": seconds,
        "tokens_per_step": tokens,
        "real_tokens/s": real_per_step / seconds,
        "real_token_share": sum(real) / sum(padded),
        "flop/s": flops_per_n * parameters * tokens / seconds,
        "useful_flop/s": flops_per_n * parameters * real_per_step / seconds,
        "peak_memory_mib": peak / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the steps run")
    parser.add_argument("--batch", type=int, default=4, help="pairs per step (the main job's is 4)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--model", help="model directory (default: the embedded SmolLM2 checkpoint)")
    parser.add_argument("--pairs", help="pairs directory (default: the embedded review pairs)")
    parser.add_argument("--random-weights", help="build the model with random weights into this directory")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # one variant, in a child process
    args = parser.parse_args()
    if args.variant:
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return
    variants = [*VARIANTS, *(GPU_VARIANTS if args.device == "cuda" else [])]
    forwarded = [
        f"--{key.replace('_', '-')}={value}"
        for key, value in vars(args).items()
        if value is not None and key not in ("json", "variant")
    ]
    peak, rows = matmul_peak(args.device), []
    for name in variants:
        print(f"… {name}", flush=True)
        done = subprocess.run([sys.executable, __file__, *forwarded, "--variant", name], capture_output=True, text=True)
        result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not result:
            print(done.stdout[-2000:], done.stderr[-3000:])
            raise SystemExit(f"variant {name!r} failed")
        rows.append({**json.loads(result[0][7:]), "matmul_peak": peak})
    print(
        f"\nSmolLM2-135M-Instruct DPO step, {args.device}, batch {args.batch} pairs, max_length 128; matmul peak "
        f"{peak / 1e12:.3g} TFLOP/s ({'bf16' if args.device == 'cuda' else 'fp32'})\n"
    )
    print("| variant | s/step | real tokens/s | peak memory (MiB) | FLOP/s | share of matmul peak | on real tokens |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {row['s/step']:.3f} | {row['real_tokens/s']:.0f} | {row['peak_memory_mib']:.0f} "
            f"| {row['flop/s'] / 1e9:.1f} G | {row['flop/s'] / peak:.1%} | {row['useful_flop/s'] / peak:.1%} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
