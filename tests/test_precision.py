"""The dtype of every trainable weight after `build_dpo_trainer`, for LoRA and QLoRA under each precision setting.

CPU runs do not fail where a GPU would (fp16's GradScaler cannot unscale bfloat16 gradients on CUDA, and a T4
has no bfloat16), so the invariant is asserted directly: with fp16, every trainable weight is float32."""

import pytest
import torch
from datasets import Dataset
from trl import DPOConfig, ModelConfig

from dpo_recipes.trainer.build import build_dpo_trainer
from dpo_recipes.worlds import embedded

from .conftest import TINY as TINY_YAML

PAIRS = Dataset.from_list([{"prompt": "The red lamp", "chosen": " is kind.", "rejected": " is bad."}] * 4)
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# policy, precision → dtype of the trainable weights. TRL 1.16 casts a quantized model's adapters to bfloat16 (as
# the QLoRA paper trains them); only fp16 needs them back in float32.
EXPECTED = {
    ("lora", "fp32"): torch.float32,
    ("lora", "bf16"): torch.float32,
    ("lora", "fp16"): torch.float32,
    ("qlora", "fp32"): torch.bfloat16,
    ("qlora", "bf16"): torch.bfloat16,
    ("qlora", "fp16"): torch.float32,
}


def _trainer(tmp_path, policy: str, precision: str, device: str = "cpu"):
    model_args = ModelConfig(
        model_name_or_path=embedded.TINY_SFT,
        dtype="float16" if precision == "fp16" and device == "cuda" else "float32",
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=LINEAR,
        load_in_4bit=policy == "qlora",
        bnb_4bit_quant_type="nf4",
    )
    training_args = DPOConfig(
        output_dir=str(tmp_path),
        fp16=precision == "fp16",
        bf16=precision == "bf16",
        use_cpu=device == "cpu",
        report_to="none",
        save_strategy="no",
        max_steps=5,
        per_device_train_batch_size=2,
        logging_steps=1,
        activation_checkpointing=False,
    )
    return build_dpo_trainer(model_args, training_args, PAIRS)


@pytest.mark.parametrize(("policy", "precision"), list(EXPECTED), ids=[f"{p}-{q}" for p, q in EXPECTED])
def test_trainable_weights_have_the_dtype_their_precision_needs(tmp_path, tiny_sft_path, policy, precision):
    trainer = _trainer(tmp_path, policy, precision)
    trainable = {name: p for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * 4 * len(LINEAR)  # A and B of every adapted layer of the 4 blocks
    assert {p.dtype for p in trainable.values()} == {EXPECTED[policy, precision]}
    assert {p.device.type for p in trainer.model.parameters()} == {"cpu"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_trains_in_fp16_on_a_gpu(tmp_path, tiny_sft_path):
    """The failure a T4 user met: QLoRA with fp16 autocast, through real optimizer steps on CUDA."""
    trainer = _trainer(tmp_path, "qlora", "fp16", device="cuda")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert trainer.state.global_step == 5
    assert any(not torch.equal(before[n], after[n].detach()) for n in before)


def test_the_device_chooses_the_precision_unless_the_run_sets_it(monkeypatch, tmp_path):
    from dpo_recipes.training import arguments

    plain = tmp_path / "plain.yaml"
    plain.write_text("beta: 0.1\n")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    chosen = arguments.with_device_precision(["--config", str(plain)])
    assert chosen[-4:] == ["--bf16", "false", "--fp16", "false"]  # a CPU: float32
    assert arguments.with_device_precision(["--config", str(plain), "--fp16", "true"])[-2:] == ["--fp16", "true"]
    assert arguments.with_device_precision(["--config", TINY_YAML]) == ["--config", TINY_YAML]  # the preset says

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16_hardware, expected in (
        (False, ["--bf16", "false", "--fp16", "true"]),
        (True, ["--bf16", "true", "--fp16", "false"]),
    ):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, b=bf16_hardware: b)
        assert arguments.with_device_precision(["--config", str(plain)])[-4:] == expected  # a T4; an A100
