"""Build TRL trainers for each setting, collate one fixed batch with TRL's collator, verify, render."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict

import torch
from trl import DPOConfig, ModelConfig

from dpo_recipes.core.errors import ConfigError
from dpo_recipes.core.files import atomic_write_text
from dpo_recipes.core.runtime import single_process_environment
from dpo_recipes.crosscheck import paths
from dpo_recipes.crosscheck.batches import own_batch
from dpo_recipes.crosscheck.check_data import CheckData
from dpo_recipes.crosscheck.verify import (
    CONVENTIONS,
    DEPARTURES,
    Result,
    Row,
    Setting,
    verify,
)
from dpo_recipes.trainer.build import build_dpo_trainer
from dpo_recipes.trainer.reference_logps import attach_reference_logps

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
SMOOTHING = {"exo_pair": 1e-3, "robust": 0.1}  # their papers need ε > 0


def settings_for(loss_types: list[str]) -> list[Setting]:
    """Each loss type alone; with "all", also every option that changes the loss."""
    chosen = LOSS_TYPES if loss_types == ["all"] else tuple(loss_types)
    unknown = set(chosen) - set(LOSS_TYPES)
    if unknown:
        raise ConfigError(f"unknown loss type(s) {sorted(unknown)}; choose from {', '.join(LOSS_TYPES)} or all")
    settings = [Setting((name,), label_smoothing=SMOOTHING.get(name, 0.0)) for name in chosen]
    if loss_types == ["all"]:
        settings += [
            Setting(beta=0.5),
            Setting(label_smoothing=0.1),  # cDPO
            Setting(("aot",), label_smoothing=0.1),
            Setting(f_divergence_type="forward_kl"),
            Setting(f_divergence_type="js_divergence"),
            Setting(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.5),
            Setting(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3),
            Setting(ld_alpha=0.5),
            Setting(use_weighting=True),
            Setting(("sigmoid", "sft"), loss_weights=(1.0, 0.5)),  # RPO-style
            Setting(("sigmoid", "bco_pair", "sft"), loss_weights=(0.8, 0.2, 1.0)),  # MPO-style
        ]
    return settings


POLICIES = {
    "full": dict(use_peft=False),
    "lora": dict(use_peft=True, lora_r=8, lora_alpha=16, lora_target_modules=["q_proj", "v_proj", "gate_proj"]),
    "qlora": dict(
        use_peft=True,
        lora_r=8,
        lora_alpha=16,
        lora_target_modules=["q_proj", "v_proj", "gate_proj"],
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
    ),
}


def build_trainer(
    setting: Setting,
    policy: str,
    model: str,
    train_dataset,
    output_dir: str,
    move: bool = True,
    eval_dataset=None,
    **config,
):
    """A DPOTrainer for ``setting`` on ``train_dataset``; with ``move``, its policy moved away from the reference
    first. Reference log-probs (``precompute_ref_log_probs``) are stored after the move, so that a reference
    computed with the adapter left on would differ from the true one."""
    model_args = ModelConfig(model_name_or_path=model, dtype=config.pop("dtype", "float32"), **POLICIES[policy])
    precompute = config.pop("precompute_ref_log_probs", False)
    args = DPOConfig(
        output_dir=output_dir,
        report_to="none",
        bf16=False,
        use_cpu=config.pop("use_cpu", True),
        activation_checkpointing=False,
        logging_steps=1,
        per_device_train_batch_size=config.pop("per_device_train_batch_size", len(train_dataset)),
        **setting.dpo_config_kwargs(),
        **config,
    )
    trainer = build_dpo_trainer(model_args, args, train_dataset, eval_dataset)
    if move:
        _move_away_from_reference(trainer.model)
    if precompute:
        attach_reference_logps(trainer)
    return trainer


def trainer_factory(policy: str, data: CheckData, rows, output_dir: str, dtype: str):
    """``build(setting, **changes)``: trainers for the checks, on ``rows`` and ``data``'s model and lengths."""

    def build(setting: Setting, rows=rows, with_eval: bool = False, **changes):
        lengths = {"max_length": data.max_length, "truncation_mode": data.truncation_mode}
        return build_trainer(
            setting,
            policy,
            data.model,
            rows,
            output_dir,
            dtype=dtype,
            eval_dataset=rows if with_eval else None,
            **{**lengths, **changes},
        )

    return build


def _move_away_from_reference(model) -> None:
    """Before training the policy *is* the reference (a fresh adapter has B = 0), so every log-ratio is 0 and
    most losses are degenerate. Seeded noise on the trainable weights makes the log-ratios O(1)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                std = 0.2 if "lora_" in name else 0.02
                param.add_(torch.randn(param.shape, generator=generator).to(param) * std)


def fixed_batch(trainer) -> dict:
    """Every pair of the trainer's (TRL-tokenized) train set, through TRL's own collator."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return {key: value.to(trainer.accelerator.device) for key, value in trainer.data_collator(rows).items()}


def setting_from_config(config: dict) -> Setting:
    """The loss setting of a recipe YAML (the DPOConfig keys that change the loss); other keys are ignored."""
    keys = {name for name in Setting.__dataclass_fields__} & config.keys()
    values = {key: tuple(config[key]) if isinstance(config[key], list) else config[key] for key in keys}
    if isinstance(values.get("loss_type"), str):
        values["loss_type"] = (values["loss_type"],)
    return Setting(**values)


def crosscheck(
    loss_types: list[str] = ("all",),
    policy: str = "lora",
    data: CheckData = CheckData(),
    settings: list[Setting] | None = None,
    dtype: str = "float32",
) -> list[Result]:
    """Verify every requested setting on one fixed batch of ``data``; returns one Result per setting."""
    rows = data.pairs()
    results = []
    with tempfile.TemporaryDirectory() as output_dir:
        build = trainer_factory(policy, data, rows, output_dir, dtype)
        for setting in settings or settings_for(list(loss_types)):
            trainer = build(setting)
            own = own_batch(trainer.processing_class, rows.to_list(), data.max_length, data.truncation_mode)
            results.append(verify(trainer, setting, fixed_batch(trainer), own, policy))
    return results


def training_checks(policy: str = "lora", data: CheckData = CheckData(), dtype: str = "float32") -> list[Row]:
    """Batch construction, ties, evaluate() with a precomputed reference (stored, and for a new eval set after
    training), gradient accumulation, packing (`paths`)."""
    rows, new_rows = data.pairs(), data.pairs(start=data.n_pairs)
    with tempfile.TemporaryDirectory() as output_dir:
        build = trainer_factory(policy, data, rows, output_dir, dtype)
        return paths.training_checks(build, rows, new_rows, data.max_length, data.truncation_mode)


def render(results: list[Result]) -> str:
    lines = []
    for result in results:
        status = "PASS" if result.passed else "FAIL"
        coarse = "" if result.sensitive else "  (rounding at this precision hides a 1% error here: not verified to 1%)"
        lines.append(f"\n{status}  {result.setting}  [{result.policy}, {result.dtype}]{coarse}")
        lines.append(
            f"  {'quantity':<20} {'TRL':>14} {'reference':>14} {'abs err':>10} {'rel err':>10} {'bound':>8}  verdict"
        )
        for row in result.rows:
            verdict = row.verdict
            if row.variant is not None:
                verdict += f" ({', '.join(result.departures)}: TRL-style value {row.variant:.6g})"
            errors = f"{'':>10} {'':>10}" if row.rel_err is None else f"{row.abs_err:>10.2e} {row.rel_err:>10.2e}"
            lines.append(
                f"  {row.quantity:<20} {row.trl:>14.7g} {row.reference:>14.7g} {errors} "
                f"{row.tolerance:>8.0e}  {verdict}"
            )
    explained = sorted({name for result in results for name in result.departures})
    for departure in DEPARTURES:
        if departure.name in explained:
            lines.append(f"\nDeparture {departure.name}: {departure.explanation}")
    lines += [f"Convention: {text}" for text in CONVENTIONS]
    return "\n".join(lines)


def to_json(results: list[Result], extra_checks: list[Row] = ()) -> str:
    return json.dumps(
        {
            "results": [
                {
                    **asdict(r),
                    "passed": r.passed,
                    "rows": [{**asdict(row), "abs_err": row.abs_err, "rel_err": row.rel_err} for row in r.rows],
                }
                for r in results
            ],
            "extra_checks": [asdict(row) for row in extra_checks],
            "departures": {
                **{d.name: d.explanation for d in DEPARTURES},
                "accumulation_averages_micro_batches": paths.ACCUMULATION_DEPARTURE.split(": ", 1)[1],
            },
            "conventions": list(CONVENTIONS),
        },
        indent=2,
    )


def crosscheck_in_subprocess(setting: Setting, policy: str, json_path: str, n_pairs: int = 4, **lengths) -> dict:
    """The verdict for one loss setting on the embedded model and world, checked in a fresh CPU process.

    A separate process keeps the check away from the calling run's accelerator state and GPU; the loss
    equations do not depend on the model, so the embedded one is enough to verify TRL's formula. ``lengths``
    (max_length, truncation_mode) are the run's own.
    """
    data = CheckData(n_pairs=n_pairs, **lengths)
    request = {"setting": setting_as_json(setting), "policy": policy, "data": asdict(data), "output": json_path}
    if os.path.exists(json_path):
        os.unlink(json_path)  # never report a previous run's verdict
    command = [sys.executable, "-m", "dpo_recipes.crosscheck.runner", json.dumps(request)]
    # its own single process: not a member of the calling run's process group, not on its GPU
    environment = single_process_environment(CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    if not os.path.exists(json_path):
        return {"skipped": f"the cross-check could not run: {done.stderr.strip().splitlines()[-1:]}"}
    with open(json_path) as results:
        verdict = json.load(results)
    verdict["where"] = f"the embedded {data.model} model, {n_pairs} pairs of {data.dataset}, CPU float32"
    return verdict


def setting_as_json(setting: Setting) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(setting).items()}


def run_request(request: dict) -> None:
    """The subprocess's side of `crosscheck_in_subprocess`: verify one setting, write the results as JSON."""
    setting = setting_from_config(request["setting"])
    results = crosscheck(policy=request["policy"], data=CheckData(**request["data"]), settings=[setting])
    atomic_write_text(request["output"], to_json(results))


if __name__ == "__main__":
    run_request(json.loads(sys.argv[1]))
