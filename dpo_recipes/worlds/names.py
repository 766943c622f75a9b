"""The names of the embedded artifacts, importable without their builders (which import torch and transformers):
the command line's help and a data file's loader need the names, not the models."""

WORLD = "dpo-recipes/toy-world"
TINY_BASE = "dpo-recipes/tiny-zephyr-base"
TINY_SFT = "dpo-recipes/tiny-zephyr-sft"
SMOLLM2 = "dpo-recipes/smollm2-135m-instruct"
REVIEW_PAIRS = "dpo-recipes/smollm2-review-pairs"
ON_TASK_PAIRS = "dpo-recipes/smollm2-review-pairs-on-task"
