"""Merge a run's LoRA adapter into its base and save a standalone model (safetensors), with peft's own merge.

A QLoRA adapter was trained against the 4-bit NF4 weights, not the original ones. So the base is loaded
4-bit exactly as in training, de-quantized (transformers' ``dequantize``), and the adapter merged into that
copy: the merged model computes what the trained policy computed, up to the saved dtype's rounding. Merging
into the original full-precision weights instead would shift every layer by its quantization error.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_directory, atomic_write_text
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.training import sharing
from dpo_recipes.worlds import embedded

logger = logging.getLogger(__name__)


def run_base_and_quantization(run_dir: Path, base_model: str | None) -> tuple[str, dict | None]:
    """The run's base model (its metrics.json, else the adapter's config) and its 4-bit settings, if any."""
    run = RunRecord.from_dir(run_dir)
    base = base_model or (run and run.model) or PeftConfig.from_pretrained(str(run_dir)).base_model_name_or_path
    return base, run.quantization if run else None


def merged_model_card(run_dir: Path, base: str, how: str) -> str:
    """The merged model's own card: Hub metadata (a merge of ``base``), what was merged, how to load it."""
    run = RunRecord.from_dir(run_dir)
    datasets = [run.dataset] if run and run.dataset != "mixture" else []
    front = sharing.front_matter(base, "merge", "transformers", datasets, ["dpo", "trl", "dpo-recipes", "merged"])
    body = (
        f"# Merged DPO policy\n\nThe LoRA adapter of `{run_dir.name}` {how}; base model `{base}`. The run's own "
        "card (its data, hyperparameters, cross-check and evaluation) is README.md in the run's folder.\n\n"
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'model = AutoModelForCausalLM.from_pretrained("PATH")\ntokenizer = AutoTokenizer.from_pretrained("PATH")\n```\n'
    )
    return sharing.merged_card(None, front, body)


def merge_adapter(
    run_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    base_model: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> dict:
    """Write ``output_dir``: base + adapter merged, its tokenizer and a README saying what was merged."""
    run_dir, output_dir = Path(run_dir), Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{output_dir} already exists and is not empty; choose another path or --overwrite")
        shutil.rmtree(output_dir)
    if not (run_dir / "adapter_config.json").is_file():
        raise ConfigError(
            f"{run_dir} holds no LoRA adapter (adapter_config.json): a full fine-tune is already a "
            "standalone model, there is nothing to merge"
        )
    base, quantization = run_base_and_quantization(run_dir, base_model)
    torch_dtype = getattr(torch, dtype)
    if quantization:
        logger.info("The adapter was trained on a 4-bit base: loading it 4-bit, de-quantizing to %s, merging", dtype)
        quantized = AutoModelForCausalLM.from_pretrained(
            embedded.resolve(base), quantization_config=BitsAndBytesConfig.from_dict(quantization), dtype=torch_dtype
        )
        model = quantized.dequantize().to(torch_dtype)
        how = (
            f"merged into a de-quantized copy of the base: the 4-bit {quantization.get('bnb_4bit_quant_type')} "
            f"weights the adapter was trained against, converted back to {dtype}"
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(embedded.resolve(base), dtype=torch_dtype)
        how = f"merged into the base weights in {dtype}"
    merged = PeftModel.from_pretrained(model, str(run_dir)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(run_dir))
    with atomic_directory(output_dir) as scratch:
        merged.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        atomic_write_text(scratch / "README.md", merged_model_card(run_dir, base, how))
    logger.info("Merged %s (%s) into %s", run_dir, how, output_dir)
    return {"base_model": base, "quantized_base": bool(quantization), "how": how, "output_dir": str(output_dir)}
