"""Run every benchmark, print the table, and write benchmarks/README.md, results.json and benchmarks.png.

    python benchmarks/run.py            # the full suite on this machine (about 10 minutes on 2 CPU cores)
    python benchmarks/run.py --quick    # a smoke run on a tiny model (checks the suite, measures nothing)

Ratios are measured side by side in one run, on the same locally built model, data and batch; each time is
the median of several repetitions. Nothing here is a pass/fail test: targets are compared in the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
# A fresh datasets cache for this run (before `datasets` is imported), so the reference precompute is timed
# cold, then warm; the benchmark never reads results cached by earlier runs.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="dpo-bench-datasets-")

import common  # noqa: E402
import efficiency  # noqa: E402
import memory  # noqa: E402
import scaling  # noqa: E402
import throughput  # noqa: E402

from dpo_recipes.core.files import atomic_write_text  # noqa: E402
from dpo_recipes.evaluation.reporting import pyplot, save_figure  # noqa: E402

FULL = dict(
    small="20M",
    large="100M",
    batch=16,
    epochs=6,
    pool=48,
    max_length=128,
    varied_batch=8,
    varied_pool=128,
    reps=5,
    pairs=[16, 32, 64, 128],
    repeats=[0, 2, 4, 8],
)
QUICK = dict(
    small="tiny",
    large="tiny",
    batch=4,
    epochs=2,
    pool=8,
    max_length=64,
    varied_batch=4,
    varied_pool=32,
    reps=1,
    pairs=[4, 8],
    repeats=[0, 1],
)


def measure(settings: dict, output_dir: str) -> dict:
    started = time.time()
    results = {"machine": common.machine(), "settings": settings}
    print("1-3. throughput, reference cache, padding …", flush=True)
    results["throughput"] = throughput.run(
        settings["small"], settings["batch"], settings["epochs"], settings["pool"], settings["max_length"], output_dir
    )
    results["throughput_varied"] = throughput.run_varied(
        settings["small"], settings["varied_batch"], settings["varied_pool"], output_dir
    )
    print("4. memory (one process per policy) …", flush=True)
    results["memory"] = memory.run(settings["large"])
    results["memory_packing"] = memory.run(settings["small"], tuple(memory.LENGTH_MODES))
    print("5. FLOP/s against the matmul peak …", flush=True)
    results["efficiency"] = efficiency.run(settings["large"], 2 * settings["batch"], max(2, settings["reps"] // 2))
    print("6. scaling …", flush=True)
    results["scaling"] = scaling.run(settings["small"], settings["batch"], settings["pairs"], settings["repeats"])
    results["wall_time_s"] = time.time() - started
    return results


def train_peak(row: dict) -> float:
    return row["training_peak_rss_mib"] or row["peak_rss_mib"]


def private(row: dict) -> float:
    return max((row["trained_private_mib"] or 0) - (row["idle_private_mib"] or 0), 1.0)


def ratio(variants: dict, a: str, b: str) -> float:
    return variants[b]["s/step"] / variants[a]["s/step"]


def speedup(varied: dict, a: str, b: str) -> float:
    return varied["real tokens/s"][a] / varied["real tokens/s"][b]


def per_token_peak(row: dict) -> float:
    """Training peak RSS above the loaded model, per real token trained, in KiB."""
    return (train_peak(row) - row["loading_peak_rss_mib"]) * 1024 / row["real_tokens"]


def table(results: dict) -> str:
    th, mem, eff, sc = results["throughput"], results["memory"], results["efficiency"], results["scaling"]
    tv = results["throughput_varied"]
    v, m, extra = th["variants"], results["machine"], th["extra"]
    on, off = "recipe, speed options on", "recipe, speed options off"
    tvs = tv["s/step"]
    step_off, step_cached = tvs[off], tvs["recipe, cached reference"]
    lines = [
        f"Machine: {m['cpu']}, {m['threads']} threads, GPU: {m['gpu']}; torch {m['torch']}, transformers "
        f"{m['transformers']}, TRL {m['trl']}; {m['date']}; whole suite {results['wall_time_s']:.0f} s.",
        "",
        f"### 1. DPO step throughput ({th['size']} model, full fine-tune, batch {th['batch']} pairs, max_length "
        f"{th['max_length']}, the toy world's {th['tokens_per_pair']:.1f} real tokens per pair; median of "
        f"{th['epochs'] - 1} epochs over {th['pool']} pairs after a warm-up epoch. A pool this small is below the "
        "4 batches transformers needs to group by length, so (c) gains from the cached reference alone here)",
        "",
        "| variant | s/step | pairs/s | tokens/s |",
        "|---|---|---|---|",
        *[
            f"| {name} | {row['s/step']:.3f} | {row['pairs/s']:.1f} | {row['tokens/s']:.0f} |"
            for name, row in v.items()
        ],
        "",
        "| ratio | measured | target |",
        "|---|---|---|",
        f"| (c) speed options on / (a) lecture loop | **{ratio(v, on, 'lecture loop (a)'):.2f}×** | ≥ 3× |",
        f"| (c) speed options on / (b) plain TRL | **{ratio(v, on, 'trl'):.2f}×** | ≥ 1.3× |",
        f"| (c) speed options off / (b) plain TRL | **{ratio(v, off, 'trl'):.2f}×** | ≈ 1 (no overhead) |",
        "",
        f"On long-tailed lengths ({tv['tokens_per_pair'] / 2:.0f} real tokens per sequence on average, "
        f"one epoch of {tv['pairs']} pairs per variant, batch {tv['batch']}, max_length 512):",
        "",
        "| variant | steps | s/step | real tokens/s | vs plain TRL | step-time spread |",
        "|---|---|---|---|---|---|",
        *[
            f"| {name} | {tv['steps'][name]} | {seconds:.3f} | {tv['real tokens/s'][name]:.0f} | "
            f"{tv['real tokens/s'][name] / tv['real tokens/s']['trl']:.2f}× | {tv['step time spread'][name]:.0%} |"
            for name, seconds in tv["s/step"].items()
        ],
        "",
        "Step-time spread is the standard deviation of the step times over their mean (first step left out); the "
        "token budget is the batch size times the mean real tokens of a pair, so its batches hold as many tokens "
        "as the others' on average.",
        "",
        "| ratio (real tokens/s) | measured | target |",
        "|---|---|---|",
        f"| packed / plain TRL | **{speedup(tv, 'recipe, packed', 'trl'):.2f}×** | ≥ 1.5× |",
        f"| packed / length grouping | **{speedup(tv, 'recipe, packed', 'recipe, length grouping'):.2f}×** | ≥ 1.15× |",
        f"| packed + cached reference / plain TRL | **{speedup(tv, 'recipe, packed + cached reference', 'trl'):.2f}×**"
        " | ≥ 2× |",
        "",
        "### 2. Reference log-probs cached (TRL's precompute_ref_log_probs + the datasets cache)",
        "",
        f"- per step (long-tailed epoch): {step_off:.3f} s with the reference forward, {step_cached:.3f} s with "
        f"cached log-probs: **{1 - step_cached / step_off:.0%} saved**; on the toy lengths (1.) "
        f"{1 - v[on]['s/step'] / v[off]['s/step']:.0%}",
        f"- the precompute itself: {extra['reference precompute, first build (s)']:.2f} s on first use, "
        f"{extra['reference precompute, cached build (s)']:.2f} s for the next run of a β sweep (β 0.1 → 0.5, a hit)",
        "",
        "### 3. Padding",
        "",
        f"- share of padding among token positions: long-tailed epoch {tv['padding share, random batches']:.0%} "
        f"with random batches → {tv['padding share, grouped batches']:.0%} grouped by length; toy world (512 "
        f"pairs) {extra['padding share, random batches']:.0%} → {extra['padding share, grouped batches']:.0%}",
        f"- step time (long-tailed epoch): {step_off:.3f} s → {tvs['recipe, length grouping']:.3f} s "
        f"(**{step_off / tvs['recipe, length grouping']:.2f}×**)",
        "",
        f"### 4. Memory of DPO ({results['settings']['large']} model, CPU; training peak = the peak RSS during 2 DPO"
        " steps, counted from after the model was loaded; private = anonymous memory after training, above the "
        "idle process: tensors, gradients, optimizer state)",
        "",
        "| policy | idle process | after loading (peak) | training peak RSS | private, above idle | file-backed |",
        "|---|---|---|---|---|---|",
        *[
            f"| {mode} | {row['idle_rss_mib']:.0f} MiB | {row['loading_peak_rss_mib']:.0f} MiB | "
            f"{train_peak(row):.0f} MiB ({train_peak(row) / train_peak(mem['full']):.2f}×) | {private(row):.0f} MiB "
            f"({private(row) / private(mem['full']):.2f}×) | {row['trained_file_mib']:.0f} MiB |"
            for mode, row in mem.items()
        ],
        "",
        f"Target QLoRA ≤ 0.35× full: private memory **{private(mem['qlora']) / private(mem['full']):.2f}×**; "
        f"training peak RSS **{train_peak(mem['qlora']) / train_peak(mem['full']):.2f}×**. RSS also counts the "
        "mmap'ed float32 checkpoint (file-backed pages) in every mode, and on CPU bitsandbytes de-quantizes the "
        "weights for every matmul, so the 4-bit saving is mainly a GPU-memory saving, not measurable here.",
        "",
        f"Padded against packed ({results['settings']['small']} model, full fine-tune, 4 steps of "
        f"{results['memory_packing']['long-tailed, padded']['real_tokens'] // 4} real tokens on average, the "
        "long-tailed lengths of 1., the same batches for both):",
        "",
        "| sequences | training peak RSS | above the loaded model | per real token |",
        "|---|---|---|---|",
        *[
            f"| {mode} | {train_peak(row):.0f} MiB | {train_peak(row) - row['loading_peak_rss_mib']:.0f} MiB | "
            f"{per_token_peak(row):.1f} KiB |"
            for mode, row in results["memory_packing"].items()
        ],
        "",
        f"### 5. Efficiency ({eff['size']}: {eff['parameters'] / 1e6:.0f}M parameters, batch {eff['batch']} pairs)",
        "",
        f"- {eff['tokens_per_step']} tokens per step (chosen and rejected rows, {eff['real_token_share']:.0%} real), "
        f"{eff['s/step']:.2f} s per step",
        f"- achieved {eff['flop/s'] / 1e9:.1f} GFLOP/s (8·N·tokens per step) against a measured fp32 matmul peak of "
        f"{eff['matmul_peak'] / 1e9:.1f} GFLOP/s: **{eff['share_of_peak']:.0%} of peak** (target ≥ 30%)",
        f"- GPU: {eff['gpu']}",
        "",
        f"### 6. Scaling ({sc['size']} model, batch {sc['batch']})",
        "",
        "| pairs | seconds |",
        "|---|---|",
        *[f"| {n} | {s:.2f} |" for n, s in sc["seconds_by_pairs"].items()],
        "",
        f"Linear fit: {sc['fit']['s_per_pair']:.3f} s per pair + {sc['fit']['intercept_s']:.2f} s, R² = "
        f"{sc['fit']['r2']:.4f}.",
        "",
        "| tokens per sequence | s/step |",
        "|---|---|",
        *[f"| {n} | {s:.3f} |" for n, s in sc["seconds_per_step_by_tokens_per_sequence"].items()],
    ]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    plt = pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    variants = results["throughput"]["variants"]
    left.barh(list(variants), [row["pairs/s"] for row in variants.values()])
    left.set_xlabel("pairs / s (higher is better)")
    left.set_title(f"DPO step throughput, {results['throughput']['size']} model")
    left.invert_yaxis()
    by_pairs = results["scaling"]["seconds_by_pairs"]
    right.plot([int(n) for n in by_pairs], list(by_pairs.values()), "o-")
    right.set_xlabel("pairs trained")
    right.set_ylabel("seconds")
    right.set_title(f"time vs pairs (R² of a line = {results['scaling']['fit']['r2']:.4f})")
    right.grid(alpha=0.3)
    save_figure(figure, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run on a tiny model (writes to --output_dir)")
    parser.add_argument("--output_dir", default=str(HERE), help="where README.md, results.json, benchmarks.png go")
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    results = measure(QUICK if args.quick else FULL, str(out / ".scratch"))
    text = table(results)
    print("\n" + text)
    intro = (HERE / "INTRO.md").read_text()
    previous = (out / "README.md").read_text() if (out / "README.md").exists() else ""
    kept = common.kept_sections(previous)  # main_job.py's and data_path.py's sections stay
    atomic_write_text(
        out / "README.md",
        intro
        + "\n## Latest results\n\n"
        + text
        + "\n\n![benchmarks](benchmarks.png)\n"
        + (f"\n{kept}\n" if kept else ""),
    )
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    chart(results, out / "benchmarks.png")
    return results


if __name__ == "__main__":
    main()
