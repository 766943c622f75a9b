"""A training run: its arguments and preflight checks, the run itself (`train`), the likelihood monitor, the
model card, and merging a trained adapter into its base."""
