"""QLoRA: DPO on a 4-bit NF4 base trains the LoRA adapter and leaves the quantized base untouched."""

import pytest
import torch
from bitsandbytes.nn import Params4bit
from trl import DPOConfig, ModelConfig

from dpo_recipes.data import load_preference_splits
from dpo_recipes.trainer.build import build_dpo_trainer

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")],
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_qlora_dpo_steps_train_the_adapter_only(tmp_path, tiny_sft_path, device):
    data = load_preference_splits(
        "dpo-recipes/toy-world", "ultrafeedback_binarized", {"train": "train_prefs"}, max_rows={"train": 24}
    )
    model_args = ModelConfig(
        model_name_or_path="dpo-recipes/tiny-zephyr-sft",
        dtype="float32",
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    training_args = DPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        bf16=False,
        activation_checkpointing=False,
        use_cpu=device == "cpu",
        save_strategy="no",
        report_to="none",
        logging_steps=1,
    )
    trainer = build_dpo_trainer(model_args, training_args, data["train"].dataset)
    model = trainer.model
    quantized = {n: p for n, p in model.named_parameters() if isinstance(p, Params4bit)}
    assert len(quantized) == 4 * 7 and all(p.quant_type == "nf4" for p in quantized.values())
    assert trainer.ref_model is None  # the reference is the 4-bit base with the adapter disabled
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    trainer.train()

    after = dict(model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert len(lora) == 4 * 7 * 2 and all(after[n].requires_grad for n in lora)
    assert all(not torch.equal(before[n], after[n].detach()) for n in lora if "lora_B" in n)
    assert all(torch.equal(before[n], after[n].detach()) for n in before if n not in lora)  # base frozen
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)
