"""Answers from a model to chat prompts, and their log-probabilities: what the win rate, the KL estimate, the β
sweep and on-policy pair generation all sample with (one code path).

Speed: prompts are sorted by length (little left padding) and generated in batches as large as a memory budget
allows, with transformers' KV cache; on a CPU with native bfloat16 matrix units, by a bfloat16 copy of a float32
model (`generation_dtype`). Reproducibility: each answer draws from its own random stream, seeded by
(seed, its prompt, its draw number), so an answer does not depend on which batch it fell in, on the batch size or
on the other prompts. That is what lets `GenerationCache` keep answers by prompt, and lets k samples per prompt
run as one batch. (In float32. A bfloat16 copy's matmuls may round differently at another batch size, as AVX2's
emulation of them does: there a rare token can differ between batchings.)
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessor, LogitsProcessorList

from dpo_recipes.core.files import atomic_write_text, cache_dir
from dpo_recipes.core.scoring import generated_token_ids, sequence_logps

Messages = list[dict]
logger = logging.getLogger(__name__)

# Bytes the KV cache and the logits of one batch may take (CPU; on a GPU, half its free memory, at most 8 GiB).
# On 2 CPU cores ~200 rows of SmolLM2-135M: past ~128 rows a larger batch is no faster there.
CPU_GENERATION_BYTES = 2**30


class RowSeededSampler(LogitsProcessor):
    """Sample each row's next token from softmax(scores / T) by the inverse CDF, with one uniform number from the
    row's own generator; every other token is set to −inf, so greedy decoding then picks the sampled one.

    Exactly the distribution ``do_sample=True`` with ``top_k=0, top_p=1`` samples (no truncation: the KL estimate
    needs the policy's own samples), but per row instead of per batch, and cheaper on a CPU: torch.multinomial
    draws one exponential per vocabulary entry (49,152 per row and token for SmolLM2: a fifth of the time)."""

    def __init__(self, temperature: float, row_seeds: list[int]):
        self.temperature = temperature
        self.generators = [torch.Generator().manual_seed(seed) for seed in row_seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        cdf = torch.softmax(scores.float() / self.temperature, dim=-1).cumsum(dim=-1)
        uniforms = torch.cat([torch.rand(1, generator=g) for g in self.generators])
        targets = uniforms.to(cdf.device)[:, None] * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, targets).clamp_(max=scores.shape[-1] - 1)
        return torch.full_like(scores, -torch.inf).scatter_(1, tokens, 0.0)


def row_seed(seed: int, prompt_text: str, draw: int) -> int:
    """The seed of one answer's random stream: (seed, the rendered prompt, the draw number)."""
    digest = hashlib.sha256(json.dumps([seed, prompt_text, draw]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX512-BF16, as Linux reports its
    flags). Elsewhere oneDNN emulates bfloat16, slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


GENERATION_DTYPES = ("auto", "float32", "bfloat16")


def generation_dtype(model, requested: str = "auto") -> torch.dtype:
    """The dtype a float32 model on a CPU generates in: ``requested``, where "auto" means
    ``$DPO_RECIPES_GENERATION_DTYPE`` if set, else bfloat16 on a CPU with native bfloat16 matmuls (on a Sapphire
    Rapids core 3.5-6x float32's matmul throughput; answers come ~2.5x faster), else float32. Any other model
    (a GPU's, a half-precision or 4-bit one) generates in its own dtype.

    Sampling from a bfloat16 copy is what GPU inference engines do: its next-token distribution differs from
    float32's by bfloat16's rounding (8 significant bits), and the log-probabilities of its answers (KL, fluency)
    are still computed by the float32 model. Another precision draws other samples, so a dataset built from
    samples pins its precision (`PairSettings.generation_dtype`) to be the same dataset on every CPU."""
    requested = cpu_generation_dtype(requested)
    own = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if model.device.type != "cpu" or any(p.dtype != torch.float32 for p in model.parameters()):
        return own  # a GPU's model, a half-precision one, a 4-bit one (its packed weights are integers)
    return getattr(torch, requested)


def cpu_generation_dtype(requested: str = "auto") -> str:
    """What ``requested`` means for a float32 model on this CPU: "float32" or "bfloat16" ("auto": the
    environment's choice, else this CPU's)."""
    if requested == "auto":
        requested = os.environ.get("DPO_RECIPES_GENERATION_DTYPE", "auto")
    if requested not in GENERATION_DTYPES:
        raise ValueError(f"generation dtype {requested!r} (DPO_RECIPES_GENERATION_DTYPE?): one of {GENERATION_DTYPES}")
    if requested == "auto":
        return "bfloat16" if cpu_has_native_bfloat16() else "float32"
    return requested


def low_precision_copy(model, dtype: torch.dtype):
    """A copy of ``model`` in ``dtype`` that generates what it does: a LoRA policy's copy has its adapter merged
    into the base weights (or dropped, while the adapter is disabled: the reference), since peft's unmerged
    adapter layers run slower in bfloat16 than the float32 model does. Its parameters require grad (it is used
    under no_grad only): torch 2.13's CPU bfloat16 linear with a frozen weight and a non-contiguous input (the
    last position of a prefill, which transformers slices for the output head) takes ~4 s instead of ~10 ms."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    writer = copy.deepcopy(model)
    if isinstance(writer, PeftModel) and hasattr(writer.base_model, "merge_and_unload"):
        tuners = [module for module in writer.modules() if isinstance(module, BaseTunerLayer)]
        disabled = any(module.disable_adapters for module in tuners)
        writer = writer.base_model.unload() if disabled else writer.base_model.merge_and_unload()
    return writer.to(dtype).requires_grad_(True)


def rows_per_batch(model, prompt_tokens: int, max_new_tokens: int) -> int:
    """How many rows fit the generation memory budget: each row holds its KV cache (every layer's keys and values
    over prompt + answer) and a few vocabulary-sized float32 copies of its logits."""
    config = model.config.get_text_config()
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = next(model.parameters()).element_size()
    kv_bytes = 2 * config.num_hidden_layers * heads * head_dim * element * (prompt_tokens + max_new_tokens)
    row_bytes = kv_bytes + 4 * config.vocab_size * 4
    budget = CPU_GENERATION_BYTES
    if model.device.type == "cuda":
        budget = min(8 * 2**30, torch.cuda.mem_get_info(model.device)[0] // 2)
    return max(1, budget // row_bytes)


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    prompts: list[Messages],
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    samples_per_prompt: int = 1,
    desc: str = "Generating",
    dtype: str = "auto",
) -> list[list[int]]:
    """Completion token ids (up to and including EOS) for chat prompts: greedy at temperature 0, otherwise sampled
    from the model's own distribution at ``temperature`` (no top-k/top-p truncation, so that the samples are the
    policy's and a KL estimate from them is unbiased). With ``samples_per_prompt`` = k > 1 (sampling only) the
    result has k answers per prompt, prompt by prompt: [p0 draw 0, p0 draw 1, …, p1 draw 0, …]. ``dtype``: see
    `generation_dtype`."""
    if samples_per_prompt > 1 and not temperature > 0:
        raise ValueError("several samples per prompt need a temperature > 0 (greedy answers are all the same)")
    was_training = model.training
    model.eval()
    precision, writer = generation_dtype(model, dtype), model
    if precision == torch.bfloat16 and all(p.dtype == torch.float32 for p in model.parameters()):
        writer = low_precision_copy(model, precision)
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    rows = [(text, draw) for text in texts for draw in range(samples_per_prompt)]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(rows)), key=lambda row: lengths[row // samples_per_prompt])
    size = rows_per_batch(writer, max(lengths, default=1), max_new_tokens)
    completions: list[list[int]] = [[] for _ in rows]
    progress = tqdm(total=len(rows), desc=desc)
    for start in range(0, len(order), size):
        batch_rows = order[start : start + size]
        batch = tokenizer(
            [rows[row][0] for row in batch_rows], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(writer.device)
        processors = LogitsProcessorList()
        if temperature > 0:
            processors.append(RowSeededSampler(temperature, [row_seed(seed, *rows[row]) for row in batch_rows]))
        output = writer.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,  # the sampler above has already chosen the token
            cache_implementation="static",  # preallocated: no cache growth by concatenation at every token (-7%)
            logits_processor=processors,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        for row, ids in zip(batch_rows, output[:, batch["input_ids"].shape[1] :].tolist(), strict=True):
            end = ids.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in ids else len(ids)
            completions[row] = ids[:end]
        progress.update(len(batch_rows))
    progress.close()
    model.train(was_training)
    return completions


def decode(tokenizer, ids: list[list[int]]) -> list[str]:
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def generate(
    model,
    tokenizer,
    prompts: list[Messages],
    max_new_tokens: int = 48,
    temperature: float = 0.0,
    seed: int = 0,
    desc: str = "Generating",
) -> list[str]:
    """Completion texts (see `generate_ids`): the notebook's side-by-side cell calls it."""
    return decode(tokenizer, generate_ids(model, tokenizer, prompts, max_new_tokens, temperature, seed, desc=desc))


def completion_logps(model, tokenizer, prompts: list[Messages], completions: list[list[int]]) -> torch.Tensor:
    """log π(y|x) (float64, summed over completion tokens) of given completion token ids after chat prompts."""
    sequences = [generated_token_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    return sequence_logps(model, sequences, tokenizer.pad_token_id)


WEIGHTS_CHUNK = 2**22  # elements: 32 MB of float64 at a time, even for a 7B model's embedding on a small GPU
ADAPTER_NAMES = ("lora_", "modules_to_save")  # peft's adapter tensors: not part of the weights it disables them to


def base_name(name: str) -> str:
    """A tensor's name in the plain model: peft's wrapper prefix and LoRA's ``base_layer`` removed, so that a
    base model keys the same alone and inside a LoRA policy with its adapter disabled."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def weights_key(model, adapter_disabled: bool = False) -> str:
    """A key of a model's current weights: every tensor's name, shape, dtype and three float64 moments to 12
    significant digits (independent of how the sums are ordered: chunks, threads, kernels), computed where the
    weights are; any optimizer step moves it. With ``adapter_disabled`` (the reference of a LoRA run)
    the adapter's tensors are left out: the key is the base's."""
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if adapter_disabled and any(part in name for part in ADAPTER_NAMES):
                continue
            moments = torch.zeros(3, dtype=torch.float64, device=tensor.device)
            flat, size = tensor.detach().flatten(), tensor.numel()
            for start in range(0, size, WEIGHTS_CHUNK):  # float64 copies of one chunk at a time, not the tensor
                values = flat[start : start + WEIGHTS_CHUNK].double()
                ramp = torch.arange(start, start + len(values), dtype=torch.float64, device=values.device) / size
                moments += torch.stack([values.sum(), values.square().sum(), (values * ramp).sum()])
            moments = [f"{value:.12g}" for value in moments.tolist()]  # the order of a sum moves the last digits
            digest.update(json.dumps([base_name(name), list(tensor.shape), str(tensor.dtype), moments]).encode())
    return digest.hexdigest()[:16]


class GenerationCache:
    """Answers kept on disk by (model weights, device, temperature, seed, max_new_tokens, generation dtype,
    rendered prompt, draw):
    the reference's answers depend on nothing else, so a rerun, another β or another training seed of the same
    preset reads them instead of generating them again; so do their log-probabilities under the model that wrote
    them (the level a fluency measure compares with). One JSON file per (weights, settings), written whole
    (write, then rename)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def _read(path: Path) -> dict | None:
        """The stored answers, or None: a missing file, or one that is not this cache's (damaged, or edited by
        hand) is regenerated, with a warning, never trusted."""
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
            if isinstance(stored, dict) and isinstance(stored.get("answers"), dict):
                return stored
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass
        logger.warning("Answer cache %s is unreadable: generating its answers again", path)
        return None

    def generate_ids(
        self,
        model,
        tokenizer,
        prompts,
        max_new_tokens=48,
        temperature=0.0,
        seed=0,
        samples_per_prompt=1,
        adapter_disabled=False,
        desc="Generating",
        with_logps=False,
        dtype="auto",
    ):
        """`generate_ids`, generating only the prompts whose answers this cache does not hold yet
        (``adapter_disabled``: see `weights_key`). With ``with_logps``: (ids, their `completion_logps` under
        ``model``), the log-probs computed once per answer too."""
        settings = [weights_key(model, adapter_disabled), str(model.device), temperature, seed, max_new_tokens]
        if generation_dtype(model, dtype) != torch.float32:  # float32 unmarked: the answers cached before the choice
            settings.append(str(generation_dtype(model, dtype)))
        path = self.directory / (hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16] + ".json")
        stored = self._read(path) or {"settings": settings, "answers": {}}
        logps = stored.setdefault("logps", {})
        texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        keys = [[json.dumps([text, draw]) for draw in range(samples_per_prompt)] for text in texts]
        missing = {
            row[0]: (prompt, row) for prompt, row in zip(prompts, keys, strict=True) if row[-1] not in stored["answers"]
        }
        logger.info("%s: %d of %d prompts' answers from %s", desc, len(prompts) - len(missing), len(prompts), path)
        changed = bool(missing)
        if missing:
            fresh = generate_ids(
                model,
                tokenizer,
                [prompt for prompt, _ in missing.values()],
                max_new_tokens,
                temperature,
                seed,
                samples_per_prompt,
                desc=desc,
                dtype=dtype,
            )
            new_keys = [key for _, row in missing.values() for key in row]
            stored["answers"].update(zip(new_keys, fresh, strict=True))
        flat = [(prompt, key) for prompt, row in zip(prompts, keys, strict=True) for key in row]
        unscored = list({key: prompt for prompt, key in flat if key not in logps}.items()) if with_logps else []
        if unscored:
            values = completion_logps(
                model, tokenizer, [p for _, p in unscored], [stored["answers"][k] for k, _ in unscored]
            )
            logps.update(zip([key for key, _ in unscored], values.tolist(), strict=True))
            changed = True
        if changed:
            atomic_write_text(path, json.dumps(stored))
        ids = [stored["answers"][key] for _, key in flat]
        return (ids, torch.tensor([logps[key] for _, key in flat], dtype=torch.float64)) if with_logps else ids


def answer_cache() -> GenerationCache:
    """The answer cache under the cache directory (``$DPO_RECIPES_CACHE``): the reference's answers, and the
    samples on-policy pairs are made of."""
    return GenerationCache(cache_dir() / "answers")
