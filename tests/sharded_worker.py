"""A DPO run sharded with PyTorch FSDP2 (``fully_shard``) or DeepSpeed ZeRO-3 on CPU processes (gloo), for
tests/test_distributed.py.

accelerate drives FSDP and DeepSpeed only on GPU-like devices (on CPU it runs plain data parallelism; see
`dpo_recipes.training.preflight.sharding_problems`), so this is the closest path that runs here: the trainer the recipe
builds (`build_dpo_trainer`: TRL's collator, loss and reference: the adapter disabled for LoRA, a separate model
for a full fine-tune), its policy and reference sharded as accelerate and TRL shard them on GPUs, TRL's
``compute_loss`` on each rank's share of a global batch, AdamW on the sharded parameters; for FSDP2 also a
sharded checkpoint (torch.distributed.checkpoint) saved and resumed.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/sharded_worker.py OUT --policy lora
    python -m torch.distributed.run ... tests/sharded_worker.py OUT --policy full --engine zero3
    python tests/sharded_worker.py OUT --policy lora --halves 2   # one process, unsharded: the baseline

Writes OUT/losses.json (rank 0) and OUT/weights.safetensors (the trainable weights, gathered in full).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from trl import DPOConfig, ModelConfig

from dpo_recipes.data import load_preference_splits
from dpo_recipes.trainer.build import build_dpo_trainer
from dpo_recipes.worlds import embedded

try:  # an AdamW update linear in the gradients (conftest.LINEAR_ADAMW)
    from .conftest import LINEAR_ADAMW as OPTIMIZER  # imported as tests.sharded_worker (pytest collects it)
except ImportError:
    from conftest import LINEAR_ADAMW as OPTIMIZER  # run as a script: tests/ is on the path

GLOBAL_BATCH = 8
POLICIES = {
    "lora": dict(use_peft=True, lora_r=8, lora_alpha=16, lora_target_modules=["q_proj", "v_proj", "up_proj"]),
    "full": {},
}


def shard(model, mesh) -> None:
    """FSDP2 as accelerate applies it (TRANSFORMER_BASED_WRAP): every decoder layer its own unit, then the root."""
    for module in model.modules():
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def trainer_for(policy: str, output_dir: str):
    pairs = load_preference_splits(embedded.WORLD, "ultrafeedback_binarized", {"t": "train_prefs"})["t"].dataset
    args = DPOConfig(
        output_dir=output_dir, use_cpu=True, bf16=False, report_to="none", save_strategy="no", max_length=128
    )
    model_args = ModelConfig(model_name_or_path=embedded.TINY_SFT, dtype="float32", **POLICIES[policy])
    return build_dpo_trainer(model_args, args, pairs.select(range(GLOBAL_BATCH * 4)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--policy", choices=sorted(POLICIES), required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--stop-after", type=int, help="save a sharded checkpoint after this step and stop")
    parser.add_argument("--resume", help="a sharded checkpoint to continue from")
    parser.add_argument("--engine", choices=["fsdp2", "zero3"], default="fsdp2", help="how to shard (zero3: DeepSpeed)")
    parser.add_argument(
        "--halves",
        type=int,
        default=1,
        help="one process only: the global batch's gradient as the mean of this many equal shares' mean-loss "
        "gradients, the arithmetic of data parallelism over as many ranks. AdamW's per-element normalization "
        "amplifies a rounding difference wherever a gradient nearly cancels, so weights after a few steps agree "
        "elementwise only between runs that sum the same terms in the same groups.",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # two processes on two cores: one thread each, never 2 × 2
    sharded = "WORLD_SIZE" in os.environ
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if sharded else (0, 1)
    if sharded and args.engine == "fsdp2":
        dist.init_process_group("gloo")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    trainer = trainer_for(args.policy, str(out / "trainer"))
    model = trainer.model
    if rank == 0:  # the starting weights (the same on every rank), against which the tests measure the update
        start = {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(start, str(out / "initial.safetensors"))
    if args.engine == "zero3":
        return train_zero3(trainer, args, out, rank, world)
    if sharded:
        mesh = init_device_mesh("cpu", (world,))
        shard(model, mesh)
        if trainer.ref_model is not None:
            shard(trainer.ref_model, mesh)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], **OPTIMIZER, foreach=False)
    first = 0
    if args.resume:
        state = dict(zip(("model", "optim"), get_state_dict(model, optimizer), strict=True))
        dcp.load(state, checkpoint_id=args.resume)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        first = json.loads((Path(args.resume) / "step.json").read_text())["step"]
    rows = trainer.train_dataset
    share = GLOBAL_BATCH // (world * args.halves)
    losses = []
    for step in range(first, args.steps):
        total = torch.zeros(())
        for half in range(args.halves):
            start = step * GLOBAL_BATCH + (rank * args.halves + half) * share
            batch = trainer.data_collator([rows[i] for i in range(start, start + share)])
            loss = trainer.compute_loss(model, batch)
            # FSDP2 reduce-scatters the mean gradient over ranks: equal shares → the global mean
            (loss / args.halves).backward()
            total += loss.detach() / args.halves
        optimizer.step()
        optimizer.zero_grad()
        if sharded:
            dist.all_reduce(total)
        losses.append(total.item() / world)
        if args.stop_after == step + 1:
            state = dict(zip(("model", "optim"), get_state_dict(model, optimizer), strict=True))
            dcp.save(state, checkpoint_id=str(out / "checkpoint"))
            if rank == 0:
                (out / "checkpoint" / "step.json").write_text(json.dumps({"step": step + 1}))
            break
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        weights = {name: tensor.contiguous() for name, tensor in full.items() if name in trainable}
        save_file(weights, str(out / "weights.safetensors"))
        summary = {
            "losses": losses,
            "world": world,
            "parameter_types": sorted({type(p).__name__ for p in model.parameters()}),
            "reference_in_train_mode": trainer.ref_model is not None and trainer.ref_model.training,
        }
        (out / "losses.json").write_text(json.dumps(summary))
    if sharded:
        dist.destroy_process_group()


def train_zero3(trainer, args, out: Path, rank: int, world: int) -> None:
    """DeepSpeed ZeRO-3 as TRL sets it up on GPUs: the policy in a training engine (parameters, gradients and
    optimizer state partitioned), a separate reference in an inference engine partitioned the same way
    (``trl.models.utils.prepare_deepspeed``: no optimizer); TRL's compute_loss on each rank's share."""
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    share = GLOBAL_BATCH // world
    config = {
        "train_micro_batch_size_per_gpu": share,
        "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},  # partition every tensor
        "optimizer": {"type": "AdamW", "params": {**OPTIMIZER, "torch_adam": True}},
    }
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=trainer.model, model_parameters=trainable, config=config)
    if trainer.ref_model is not None:
        reference_config = {key: value for key, value in config.items() if key != "optimizer"}
        trainer.ref_model = deepspeed.initialize(model=trainer.ref_model, config=reference_config)[0]
        trainer.ref_model.eval()
    engine.train()
    rows, losses = trainer.train_dataset, []
    for step in range(args.steps):
        start = step * GLOBAL_BATCH + rank * share
        loss = trainer.compute_loss(engine, trainer.data_collator([rows[i] for i in range(start, start + share)]))
        engine.backward(loss)
        engine.step()
        total = loss.detach().clone()
        dist.all_reduce(total)
        losses.append(total.item() / world)
    names = {id(p): n for n, p in engine.module.named_parameters()}
    with deepspeed.zero.GatheredParameters([p for p in engine.module.parameters() if p.requires_grad]):
        weights = {names[id(p)]: p.detach().clone() for p in engine.module.parameters() if p.requires_grad}
    if rank == 0:
        save_file(weights, str(out / "weights.safetensors"))
        partitioned = all(hasattr(p, "ds_id") and p.numel() == 0 for p in engine.module.parameters())
        summary = {"losses": losses, "world": world, "parameter_types": ["ZeRO-3"] if partitioned else ["?"]}
        reference = getattr(trainer.ref_model, "module", None)  # the engine's own flag stays True; its module's
        summary["reference_in_train_mode"] = reference is not None and reference.training
        (out / "losses.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
