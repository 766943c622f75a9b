"""Zephyr-style dDPO with TRL: a raw preference dataset → a DPO-trained LoRA, QLoRA or full policy.

Zephyr's method is dSFT then dDPO: the model given here is already SFT-trained and is also the reference
(for LoRA/QLoRA, the same weights with the adapter disabled). Each preset is a YAML file beside this script.

    # Offline tiny preset: embedded SFT model + toy preference world, 2 CPU cores, a few minutes
    accelerate launch recipes/zephyr_style.py --config recipes/zephyr_style/tiny.yaml

    # Zephyr-7B-β QLoRA on one GPU
    accelerate launch --num_processes 1 recipes/zephyr_style.py --config recipes/zephyr_style/qlora.yaml

    # Zephyr-7B-β full fine-tune on 8 GPUs (an accelerate DeepSpeed ZeRO-3 config)
    accelerate launch --config_file recipes/accelerate_configs/deepspeed_zero3.yaml recipes/zephyr_style.py \
        --config recipes/zephyr_style/full.yaml

Resume a killed run with ``--resume_from_checkpoint last`` (the newest complete checkpoint). Every YAML key is a
flag too, and flags override the YAML (e.g. ``--beta 0.05 --max_steps 20``); unknown
YAML keys are an error. ``--help`` lists every option. The output directory receives the adapter (or model),
TRL's logs (trainer_state.json), metrics.json, training_curves.png and report.md.
"""

from dpo_recipes.training.train import RecipeArguments, load_splits, main, make_parser, run_from_command_line

__all__ = ["RecipeArguments", "load_splits", "main", "make_parser"]

if __name__ == "__main__":
    run_from_command_line()
