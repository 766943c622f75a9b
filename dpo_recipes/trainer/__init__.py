"""TRL's DPOTrainer as this project builds it: the policy (full, LoRA, QLoRA) and its reference (`build`),
packing, and precomputed reference log-probabilities. The cross-check verifies exactly this trainer."""
