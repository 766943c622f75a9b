"""Item 4: peak process memory (RSS) of DPO steps for a full, LoRA and 4-bit QLoRA policy on one model, and for
padded against packed sequences on long-tailed lengths (the same pairs and batches, so the same real tokens).

Each mode runs in its own process (peak RSS never goes down); ``python benchmarks/memory.py MODE SIZE``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import resource
import subprocess
import sys
from pathlib import Path

POLICIES = {
    "full": {},
    "lora": {"use_peft": True, "lora_r": 16, "lora_alpha": 32, "lora_target_modules": "all-linear"},
    "qlora": {
        "use_peft": True,
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_target_modules": "all-linear",
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
    },
}

# Long-tailed pairs (throughput.varied_lengths), full fine-tune, 4 steps of 8 pairs: padded vs packed.
LENGTH_MODES = {"long-tailed, padded": False, "long-tailed, packed": True}


def resident_mib() -> dict:
    """Current resident memory split into private (anonymous: tensors, optimizer state) and file-backed pages
    (mapped files: libraries and the mmap'ed safetensors checkpoint, which the kernel can drop and reread)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return {}
    fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile") if key in fields}


def peak_rss_mib() -> float:
    """This process's peak resident memory. Linux: VmHWM, which starts afresh at exec (ru_maxrss would carry
    the parent's peak over into a child process, and the parent here is the whole benchmark suite)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # macOS reports bytes


def reset_peak() -> bool:
    """Restart the peak-RSS count from the current RSS (Linux: /proc/self/clear_refs "5"), after handing memory
    freed while loading back to the system (glibc keeps it otherwise, and RSS would count it)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(mode: str, size: str, batch: int = 8, steps: int = 2) -> dict:
    import common
    import torch
    from trl import ModelConfig

    from dpo_recipes.trainer.build import build_dpo_trainer
    from dpo_recipes.trainer.packing import pair_tokens

    idle, idle_split = peak_rss_mib(), resident_mib()  # torch, transformers, TRL imported; no model yet
    packed = LENGTH_MODES.get(mode)
    if packed is None:
        model_args = ModelConfig(model_name_or_path=common.model_path(size), dtype="float32", **POLICIES[mode])
        data = common.pairs(batch * steps)
    else:
        from throughput import varied_lengths

        model_args = ModelConfig(model_name_or_path=common.model_path(size), dtype="float32")
        steps, data = 4, varied_lengths(common.pairs(batch * 4))
    args = common.cpu_config(
        f"/tmp/dpo-bench-memory-{mode.replace(' ', '')}",
        per_device_train_batch_size=batch,
        max_steps=steps,
        max_length=512,
        seed=0,
    )
    trainer = build_dpo_trainer(model_args, args, data, pack_sequences=bool(packed))
    real_tokens = sum(pair_tokens(trainer.train_dataset))
    loading_peak = peak_rss_mib()  # loading: a 4-bit base is read in full precision, then quantized
    training_peak = None
    if reset_peak():
        trainer.train()
        training_peak = peak_rss_mib()
    else:
        trainer.train()
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {
        "mode": mode,
        "real_tokens": real_tokens,
        "idle_rss_mib": idle,
        "loading_peak_rss_mib": loading_peak,
        "training_peak_rss_mib": training_peak,
        "peak_rss_mib": peak_rss_mib(),
        "cuda_peak_mib": cuda,
        "idle_private_mib": idle_split.get("RssAnon"),
        "trained_private_mib": resident_mib().get("RssAnon"),
        "trained_file_mib": resident_mib().get("RssFile"),
    }


def run(size: str, modes=tuple(POLICIES)) -> dict:
    here = Path(__file__).parent
    results = {}
    for mode in modes:
        done = subprocess.run([sys.executable, str(here / "memory.py"), mode, size], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"memory benchmark {mode} failed:\n{done.stderr[-2000:]}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    print(json.dumps(measure(sys.argv[1], sys.argv[2])))
