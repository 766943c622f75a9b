"""Scoring a batch never holds its full-vocabulary logits: memory stays bounded for a 150k-token vocabulary (as
Qwen's), and the chunked float32 sums equal the float64 ones within float32's rounding."""

import json
import subprocess
import sys

import torch

from dpo_recipes.core.scoring import LOGITS_PER_CHUNK, chunked_sequence_logps, completion_batch, token_logps

PEAK_MB = 600  # the chunks (64 MB of logits, a few temporaries of their size) and the model's own activations

MEASURE = """
import json, resource, torch
from transformers import LlamaConfig, LlamaForCausalLM
from dpo_recipes.core.scoring import sequence_logps
torch.manual_seed(0)
config = LlamaConfig(vocab_size=150_000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)
model = LlamaForCausalLM(config).eval()
sequences = [(list(range(1, 9)), list(range(1, 257)))] * 8
peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (Linux reports KB)
before = peak()
sequence_logps(model, sequences, pad_token_id=0, batch_size=8)
print(json.dumps({"before": before, "after": peak()}))
"""


def test_scoring_a_150k_vocabulary_batch_stays_within_its_memory_bound():
    done = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, check=True)
    peak = json.loads(done.stdout.strip().splitlines()[-1])
    full_float64_logits_mb = 8 * 255 * 150_000 * 8 / 2**20  # what the unchunked path would hold: 2,334 MB
    assert peak["after"] - peak["before"] < PEAK_MB < full_float64_logits_mb / 3, peak


def test_chunked_sums_equal_the_float64_ones_within_float32_rounding(tiny_sft_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_sft_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_sft_path)
    texts = ["the red fox is kind to the old man", "a blue lamp", "the river is golden and the sky is"] * 3
    ids = [tokenizer(text)["input_ids"] for text in texts]
    batch = completion_batch([(row[:2], row) for row in ids], tokenizer.pad_token_id)
    with torch.no_grad():
        exact = token_logps(model, **batch, details=True)
        chunked = chunked_sequence_logps(model, **batch)
    # float32 log-softmax: each token's log π is off by at most a few units of float32 roundoff of the largest
    # logit and of log V (logsumexp's terms), summed over the completion tokens
    unit = torch.finfo(torch.float32).eps / 2
    per_token = 8 * unit * (exact.max_logit + torch.log(torch.tensor(float(model.config.vocab_size))))
    bound = (per_token * exact.mask).sum(dim=1)
    assert ((chunked - exact.sequence()).abs() <= bound).all(), (chunked - exact.sequence(), bound)
    assert LOGITS_PER_CHUNK // (len(texts) * model.config.vocab_size) >= 1
