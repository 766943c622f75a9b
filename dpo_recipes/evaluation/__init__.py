"""What DPO did, measured: win rate and KL against the reference (`comparison`), the reports and plots
(`reporting`), and the evaluation of a saved run (`run_eval`, `dpo-recipes eval`)."""
