"""DPOConfig options that TRL 1.16 removed or accepts and then ignores, with what to use instead.

Recipes and tutorials written for earlier TRL releases still carry them. A removed key would stop the parser
with "unknown argument" and no hint; an ignored one (``padding_free``) would let a run start that does not do
what its config says. So a removed key is an error that names its replacement, and an ignored one a warning.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from dpo_recipes.core.errors import ConfigError, yaml_problem

_LENGTHS = "max_length (prompt + completion together, cut by truncation_mode: keep_start or keep_end)"
_REFERENCE = "nothing: a LoRA run's reference is its base with the adapter disabled (an adapter named 'ref' if any)"
REMOVED = {
    "rpo_alpha": "loss_type: [sigmoid, sft] with loss_weights: [1.0, <rpo_alpha>] (RPO's NLL term on the chosen)",
    "max_prompt_length": _LENGTHS,
    "max_completion_length": _LENGTHS,
    "max_target_length": _LENGTHS,
    "label_pad_token_id": "nothing: completion_mask marks what counts (pad_token sets the padding id)",
    "padding_value": "pad_token",
    "is_encoder_decoder": "nothing: DPOTrainer 1.16 trains decoder-only models",
    "generate_during_eval": "`dpo-recipes evaluate RUN_DIR` after training (judged generations, several temperatures)",
    "ref_model_init_kwargs": "model_init_kwargs (the reference is loaded as the policy is)",
    "model_adapter_name": _REFERENCE,
    "ref_adapter_name": _REFERENCE,
    "force_use_ref_model": _REFERENCE,
    "reference_free": "no replacement in DPOTrainer 1.16 (reference-free losses such as SimPO are not in it)",
    "use_logits_to_keep": "nothing: TRL's fused LM head computes only the log-probs it needs",
    "tools": "a 'tools' column in the dataset",
    "use_liger_loss": "nothing (the Liger DPO loss was removed; use_liger_kernel is deprecated too)",
    "base_model_attribute_name": "nothing",
}
IGNORED = {
    "padding_free": "TRL 1.16 disables padding_free for DPO and pads anyway; pack_sequences: true is this "
    "project's padding-free DPO",
    "use_liger_kernel": "deprecated in TRL 1.16, and its fused linear cross-entropy is switched off for DPO",
}


def given_keys(argv: list[str]) -> set[str]:
    """Option names on the command line (``--name value`` or ``--name=value``) and in its --config YAML."""
    keys = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    for i, arg in enumerate(argv):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else None
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        if path and Path(path).is_file():
            try:
                config = yaml.safe_load(Path(path).read_text()) or {}
            except yaml.YAMLError as error:
                raise yaml_problem(error, f"--config {path}") from error
            keys |= set(config) if isinstance(config, dict) else set()
    return keys


def check_removed(argv: list[str]) -> None:
    """A ConfigError naming every removed option given, each with its replacement."""
    removed = sorted(given_keys(argv) & REMOVED.keys())
    if removed:
        raise ConfigError(
            "option(s) removed in TRL 1.16: " + "; ".join(f"{key} → use {REMOVED[key]}" for key in removed)
        )


def ignored_warnings(training_args) -> list[str]:
    """A sentence for every option that is set but does nothing on the installed TRL."""
    return [f"{name}=true does nothing here: {why}" for name, why in IGNORED.items() if getattr(training_args, name)]
