"""Scoring, the bottom layer: how likely a model finds a completion, and which model is a run's reference.

Everything that reads log-probabilities imports it: the evaluation (KL, implicit reward), the data doctor (token
ids as TRL makes them) and the cross-check. It holds plain torch code and no TRL code path, so the cross-check
that uses it stays independent of what it verifies.

A batch is TRL's preference layout: ``input_ids`` (N, T) right-padded, ``attention_mask``, and
``completion_mask`` marking completion tokens (prompt and padding are 0). A preference batch puts the B chosen
sequences first, then the B rejected ones (N = 2B).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import Tensor


@dataclass
class TokenLogps:
    """Per-token views of one forward pass, aligned with the *predicted* tokens (positions 1..T-1)."""

    logps: Tensor  # (N, T-1) float64: log π(token_t | tokens_<t)
    mask: Tensor  # (N, T-1) float64: 1 where token_t is a completion token
    log_sum_sq_probs: Tensor  # (N, T-1) float64: log Σ_v π(v | tokens_<t)², for WPO
    entropy: Tensor | None = None  # (N, T-1): −Σ_v π(v) log π(v) of each next-token distribution
    mean_logits: Tensor | None = None  # (N, T-1): the logits' mean over the vocabulary
    is_top1: Tensor | None = None  # (N, T-1) bool: the token is the distribution's most likely one
    top1_margin: Tensor | None = None  # (N, T-1): logit of the token minus the largest other logit
    rounding: Tensor | None = None  # (N, T-1): s.d. of log π(token) from rounding the logits to their dtype
    max_logit: Tensor | None = None  # (N, T-1): the largest |logit|

    def sequence(self) -> Tensor:
        """log π(y|x): summed over completion tokens (the DPO paper's sequence log-probability)."""
        return (self.logps * self.mask).sum(dim=1)

    def lengths(self) -> Tensor:
        return self.mask.sum(dim=1)

    def halves(self, values: Tensor) -> tuple[Tensor, Tensor]:
        """(chosen, rejected) halves of a (2B, …) tensor."""
        return values.chunk(2, dim=0)


def token_logps(
    model,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    details: bool = False,
    float64_head: bool = False,
    position_ids: Tensor | None = None,
) -> TokenLogps:
    """One plain forward of ``model`` (no TRL code path): logits upcast to float64 before the log-softmax.
    ``details`` adds the per-token entropy, mean logit and top-1 flag (what TRL's logged metrics average), and
    what the cross-check's error bounds read: the top-1 margin, the largest logit and the rounding of the logits.
    ``float64_head`` computes the logits from the final hidden states in float64 (for a plain linear LM head),
    so that they carry no rounding of a low-precision output dtype. ``position_ids`` (with no attention mask) run
    packed rows, positions restarting at every sequence."""
    raw = _logits(model, input_ids, attention_mask, float64_head, position_ids)[:, :-1]
    logits = raw.double()
    log_probs = torch.log_softmax(logits, dim=-1)
    targets = input_ids[:, 1:]
    tokens = TokenLogps(
        logps=log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1),
        mask=completion_mask[:, 1:].double(),
        log_sum_sq_probs=torch.logsumexp(2 * log_probs, dim=-1),
    )
    if details:
        with torch.no_grad():
            tokens.entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
            tokens.mean_logits = logits.mean(dim=-1)
            tokens.is_top1 = log_probs.argmax(dim=-1) == targets
            tokens.top1_margin, tokens.rounding = _margin_and_rounding(logits, log_probs, targets, raw.dtype)
            tokens.max_logit = logits.abs().amax(dim=-1)
    return tokens


def _logits(model, input_ids: Tensor, attention_mask: Tensor, float64_head: bool, position_ids=None) -> Tensor:
    """The model's logits; with ``float64_head``, the final hidden states times the output embeddings in float64,
    unless the model scales or caps its logits (then its own logits)."""
    config = model.config.get_text_config() if float64_head else None
    scaled = any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if position_ids is not None:
        inputs["position_ids"] = position_ids
    if not float64_head or scaled:
        return model(**inputs).logits
    outputs = model(**inputs, output_hidden_states=True)
    head = model.get_output_embeddings()
    logits = outputs.hidden_states[-1].double() @ head.weight.double().T
    return logits if head.bias is None else logits + head.bias.double()


def _margin_and_rounding(logits: Tensor, log_probs: Tensor, targets: Tensor, dtype: torch.dtype):
    """The target's logit minus the largest other logit; and the standard deviation of log π(target) caused by
    rounding every logit z_v to ``dtype`` (an error uniform within ±u·|z_v|, so of s.d. u·|z_v|/√3):
    δ log π(y) = δz_y − Σ_v π(v)·δz_v, whose variance is (u²/3)·[z_y²(1 − 2π(y)) + Σ_v π(v)² z_v²]."""
    target_logit = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, targets.unsqueeze(-1), float("-inf")).amax(dim=-1)
    unit = torch.finfo(dtype).eps / 2  # unit roundoff of the logits' dtype
    probs = log_probs.exp()
    target_prob = probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    variance = target_logit**2 * (1 - 2 * target_prob) + (probs**2 * logits**2).sum(dim=-1)
    return target_logit - others, unit * (variance.clamp(min=0) / 3).sqrt()


def trl_token_ids(tokenizer, prompt, completion) -> tuple[list[int], list[int]]:
    """Prompt ids and prompt+completion ids of a preference row, as TRL 1.16's DPOTrainer makes them: the chat
    template for conversational rows (generation prompt on the prompt alone), plain tokenization with EOS
    appended to the completion for standard rows."""
    if isinstance(prompt, list):
        prompt_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]
        full_ids = tokenizer.apply_chat_template(prompt + completion, return_dict=True)["input_ids"]
        return list(prompt_ids), list(full_ids)
    if tokenizer.eos_token and not completion.endswith(tokenizer.eos_token):
        completion += tokenizer.eos_token
    return tokenizer(prompt)["input_ids"], tokenizer(prompt + completion)["input_ids"]


def generated_token_ids(tokenizer, prompt: list[dict], completion: list[int]) -> tuple[list[int], list[int]]:
    """Prompt ids and prompt+completion ids of a chat prompt and the token ids a model generated after it."""
    prompt_ids = list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"])
    return prompt_ids, prompt_ids + list(completion)


def completion_batch(sequences: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``completion_mask`` from (prompt ids, full ids) pairs; the
    completion is what follows the prompt (TRL's layout)."""
    width = max(len(full) for _, full in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (prompt, full) in enumerate(sequences):
        input_ids[i, : len(full)] = torch.tensor(full)
        attention[i, : len(full)] = 1
        completion[i, len(prompt) : len(full)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}


@torch.no_grad()
def sequence_logps(
    model, sequences: list[tuple[list[int], list[int]]], pad_token_id: int, batch_size: int = 32
) -> Tensor:
    """log π(y|x) (float64, summed over completion tokens) of each (prompt ids, full ids) pair, in eval mode,
    without ever holding a batch's full-vocabulary logits (`chunked_sequence_logps`). Batches are made of
    sequences of similar length (little padding), and the values returned in the order given."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][1]))
    values = torch.zeros(len(sequences), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = completion_batch([sequences[i] for i in chosen], pad_token_id)
            values[chosen] = chunked_sequence_logps(model, **{k: v.to(model.device) for k, v in batch.items()}).cpu()
    model.train(was_training)
    return values


LOGITS_PER_CHUNK = 2**24  # at most this many logits exist at once: 64 MB in float32


def chunked_sequence_logps(model, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor) -> Tensor:
    """Σ over completion tokens of log π(token), with at most LOGITS_PER_CHUNK logits in memory.

    The decoder's final hidden states *at the positions that predict a completion token* (not the prompt's, not
    the padding's) go through the output head a few hundred at a time; each chunk's log-softmax is taken in
    float32 and summed in float64. A full-vocabulary float64 tensor of a padded batch
    would be B·T·V·8 bytes (a 152k-token vocabulary: 1.2 MB per position, tens of GB per batch of 32 × 512).
    A model that scales or caps its logits, or has no separate decoder, is scored through its own logits."""
    try:
        config, head, decoder = model.config.get_text_config(), model.get_output_embeddings(), model.get_decoder()
    except (AttributeError, NotImplementedError):  # not a transformers model with a decoder and an output head
        config = head = decoder = None
    scaled = any(getattr(config, name, None) for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"))
    if scaled or decoder is None or head is None:
        return token_logps(model, input_ids, attention_mask, completion_mask).sequence()
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    rows, positions = completion_mask[:, 1:].nonzero(as_tuple=True)  # only the positions that predict a completion
    targets = input_ids[rows, positions + 1]
    step = max(1, LOGITS_PER_CHUNK // head.weight.shape[0])
    total = torch.zeros(hidden.shape[0], dtype=torch.float64, device=hidden.device)
    for start in range(0, len(rows), step):
        logits = head(hidden[rows[start : start + step], positions[start : start + step]]).float()
        target = logits.gather(-1, targets[start : start + step, None]).squeeze(-1)
        total.index_add_(0, rows[start : start + step], (target - torch.logsumexp(logits, dim=-1)).double())
    return total


@contextlib.contextmanager
def as_reference(model, ref_model=None) -> Iterator[object]:
    """The reference of a run: its separate ``ref_model``, or the LoRA policy with its adapter disabled."""
    if ref_model is not None:
        yield ref_model
    elif isinstance(model, PeftModel):
        with model.disable_adapter():
            yield model
    else:
        raise ValueError("a full fine-tune without a separate ref_model has no reference left after training")
