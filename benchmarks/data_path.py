"""The data path against `datasets` itself: a recipe's `convert` and `doctor` beside a plain `datasets` load + map
of the same transcripts, on a synthetic Anthropic-HH file (≥100k rows, multi-turn, real lengths; no real row is
copied). Each measurement runs in its own process with an empty datasets cache; wall time and peak RSS (the
process's maximum resident set) are printed as a table and written to benchmarks/results/data_path.json.

Targets (issue 27): convert ≤ 2× the plain map's time and ≤ 1.5× its peak memory; doctor ≥ 5,000 rows/s
without a tokenizer.

    python benchmarks/data_path.py [--rows 120000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCABULARY = (
    "the a plant water light soil book story time people city train music coffee answer question help think "
    "small large good bad often never always maybe because without before after around garden window river"
)
WORDS = VOCABULARY.split()

# The plain baseline: what anyone would write with datasets to split HH transcripts into messages.
PLAIN = """
import re, sys
from datasets import load_dataset
TURN = re.compile(r"\\n\\n(Human|Assistant): ")
def messages(text):
    parts = TURN.split(text)[1:]
    roles = ["user" if who == "Human" else "assistant" for who in parts[::2]]
    return [{"role": role, "content": said} for role, said in zip(roles, parts[1::2])]
def split(row):
    chosen, rejected = messages(row["chosen"]), messages(row["rejected"])
    return {"prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected[-1:]}
data = load_dataset("json", data_files=sys.argv[1], split="train")
data.map(split, remove_columns=data.column_names).to_json(sys.argv[2])
"""


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high))).capitalize() + "."


def hh_row(rng: random.Random) -> dict:
    """One HH-style pair: 1–4 turns of shared history, then two different final replies."""
    history = ""
    for _ in range(rng.randint(1, 4)):
        history += f"\n\nHuman: {sentence(rng, 5, 30)}\n\nAssistant: {sentence(rng, 10, 60)}"
    history += f"\n\nHuman: {sentence(rng, 5, 30)}"
    return {
        "chosen": f"{history}\n\nAssistant: {sentence(rng, 10, 80)}",
        "rejected": f"{history}\n\nAssistant: {sentence(rng, 5, 60)}",
    }


def write_rows(path: Path, rows: int) -> None:
    rng = random.Random(0)
    with path.open("w") as handle:
        for _ in range(rows):
            handle.write(json.dumps(hh_row(rng)) + "\n")


# Runs one command and reports its peak RSS: RUSAGE_CHILDREN covers only this wrapper's own children.
WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
sys.stderr.write(f"\\nPEAK_RSS_KIB {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(code)
"""


def measure(command: list[str], cache: Path) -> dict:
    """Wall time and peak RSS of ``command`` in a fresh process with an empty datasets cache."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *command], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    peak_kib = int(result.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024, "stdout": result.stdout}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=120_000, help="rows of the synthetic HH file (default 120000)")
    args = parser.parse_args()
    cli = [sys.executable, "-m", "dpo_recipes.cli"]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = scratch / "hh.jsonl"
        write_rows(source, args.rows)
        plain = measure([sys.executable, "-c", PLAIN, str(source), str(scratch / "plain.jsonl")], scratch / "c1")
        convert = measure(
            [*cli, "data", "convert", str(source), "--recipe", "hh_rlhf", "--split", "train", str(scratch / "out")]
            + ["--to", "jsonl"],
            scratch / "c2",
        )
        doctor = measure([*cli, "data", "doctor", str(source), "--recipe", "hh_rlhf", "--json"], scratch / "c3")
    report = json.loads(doctor.pop("stdout"))
    for result in (plain, convert):
        result.pop("stdout")
    results = {
        "rows": args.rows,
        "cpu_count": os.cpu_count(),
        "plain_datasets_map": plain,
        "convert": {**convert, "time_ratio": convert["seconds"] / plain["seconds"]},
        "doctor": {**doctor, "rows_per_s": report["rows_read"] / doctor["seconds"], "rows_read": report["rows_read"]},
    }
    memory_ratio = convert["peak_rss_mib"] / plain["peak_rss_mib"]
    results["convert"]["memory_ratio"] = memory_ratio
    lines = [
        "## The data path (`benchmarks/data_path.py`)",
        "",
        f"{args.rows:,} synthetic Anthropic-HH rows (1–4 turns); {os.cpu_count()} cores; each in its own process "
        f"with an empty datasets cache; {time.strftime('%Y-%m-%d')}.",
        "",
        "| | wall time | peak RSS | against plain datasets |",
        "|---|---|---|---|",
        f"| plain `datasets` load + map + to_json | {plain['seconds']:.1f} s | {plain['peak_rss_mib']:.0f} MiB | 1 |",
        f"| `dpo-recipes data convert` | {convert['seconds']:.1f} s | {convert['peak_rss_mib']:.0f} MiB "
        f"| **{results['convert']['time_ratio']:.2f}×** time (target ≤ 2), **{memory_ratio:.2f}×** memory "
        "(target ≤ 1.5) |",
        f"| `dpo-recipes data doctor` (no tokenizer) | {doctor['seconds']:.1f} s | {doctor['peak_rss_mib']:.0f} MiB "
        f"| **{results['doctor']['rows_per_s']:,.0f} rows/s** (target ≥ 5,000) |",
    ]
    text = "\n".join(lines)
    out = HERE / "results" / "data_path.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    sys.path.insert(0, str(HERE))
    import common

    common.write_readme_section("data_path", text)
    print(text + f"\n\nWrote {out} and the data-path section of {HERE / 'README.md'}")


if __name__ == "__main__":
    main()
