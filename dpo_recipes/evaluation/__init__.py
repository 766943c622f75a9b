"""What DPO did, measured: win rate and KL against the reference (`comparison`), the reports and plots
(`reporting`), and the evaluation of a saved run (`run_eval`, `dpo-recipes eval`)."""

MAX_PAIRS = 512  # held-out raw rows scored for the implicit reward unless asked otherwise (`--max-pairs`)
