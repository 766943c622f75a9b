"""The model card (README.md) every run writes beside its adapter or model.

Hub-style YAML front matter (`dpo_recipes.training.sharing`), merged with the card PEFT writes, so the
directory can be pushed as is,
then what a user needs to trust or reject the weights: what was trained on what, every hyperparameter that
differs from the TRL/transformers defaults (and the full set, folded), the cross-check verdict for the run's
loss settings, the evaluation figures, intended use and limitations. Secrets never reach the card:
``TrainingArguments.to_dict`` already masks every ``*_token`` value.
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
from pathlib import Path

import yaml

from dpo_recipes.core.files import atomic_write_text
from dpo_recipes.core.run_record import RunRecord
from dpo_recipes.trainer.build import policy_kind
from dpo_recipes.training import sharing

# Precision and device fields are validated against the hardware on construction (TRL's bf16 default fails on
# a CPU), so the default instance takes the run's values and these fields are compared with their declared
# defaults instead.
_HARDWARE_FIELDS = ("bf16", "fp16", "use_cpu")


def changed_hyperparameters(*configs) -> dict[str, object]:
    """Every field of the given dataclass configs whose value differs from a default-constructed instance's
    (compared after each class's own normalization, so only what the user or recipe really set shows)."""
    changed = {}
    for config in configs:
        fields = {field.name: field for field in dataclasses.fields(config)}
        pinned = {name: getattr(config, name) for name in _HARDWARE_FIELDS if name in fields}
        values, defaults = _as_dict(config), _as_dict(type(config)(**pinned))
        defaults.update({name: fields[name].default for name in pinned})
        changed.update({name: value for name, value in values.items() if defaults.get(name) != value})
    return changed


def _as_dict(config) -> dict:
    """A config as plain values; TrainingArguments' own ``to_dict`` masks secrets (hub tokens)."""
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def text(value: object) -> str:
    """Any string as literal markdown text: HTML and markdown punctuation escaped, on one line."""
    escaped = html.escape(" ".join(str(value).split()), quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~])", r"\\\1", escaped)


def code(value: object) -> str:
    """Any string as an inline code span: fenced by more backticks than it holds, on one line."""
    value = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", value)), default=0) + 1)
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def table_code(value: object) -> str:
    """``code`` inside a table cell, where GitHub-flavoured markdown needs every pipe escaped, even in code."""
    return code(value).replace("|", "\\|")


def _value(value) -> str:
    return json.dumps(value, default=str, ensure_ascii=False) if not isinstance(value, str) else value


def guard_lines(guard: dict | None) -> list[str]:
    """The reference guard's evidence: the run's own model, batch and device."""
    if not guard:
        return []
    if "skipped" in guard:
        return [f"Reference guard: not run ({guard['skipped']}).", ""]
    return [
        f"**This run's own check (reference guard)**: before the first optimizer step, on {guard['sequences']} "
        f"sequences of the run's first training batch, on this run's own model and device, the policy's log-probs "
        f"equalled the reference's ({guard['form']}): |log π − log π_ref| ≤ {guard['max_abs_logp_difference']:.2g} "
        f"nats, within the rounding bound ({guard['bound_at_worst']:.2g} at the closest sequence); implicit rewards "
        f"started at 0 (|r| ≤ {guard['max_implicit_reward']:.2g}).",
        "",
    ]


def crosscheck_section(crosscheck: dict | None, guard: dict | None = None) -> list[str]:
    if crosscheck is None or "results" not in crosscheck:
        reason = (crosscheck or {}).get("skipped", "not run")
        return [
            *guard_lines(guard),
            f"Cross-check of TRL's numbers: not run ({reason}). Verify with "
            "`dpo-recipes crosscheck --config <your YAML>`.",
        ]
    lines = [
        *guard_lines(guard),
        "**TRL's computation for this run's loss settings** (loss, log-probs, rewards, metrics, gradients) was "
        "recomputed from the papers' equations by `dpo_recipes.crosscheck`, independently of TRL — on a stand-in, "
        f"not on this run's model: {crosscheck['where']}. It checks TRL's code for these settings; the guard above "
        "checks this run's reference.",
        "",
    ]
    for result in crosscheck["results"]:
        verdict = "**PASS**" if result["passed"] else "**FAIL**"
        checked = sum(row["verdict"] != "MISMATCH" for row in result["rows"])
        lines.append(
            f"- {verdict} `{result['setting']}` [{result['policy']}, {result['dtype']}]: "
            f"{checked}/{len(result['rows'])} quantities within the bounds of their rounding"
        )
        for name in result["departures"]:
            lines.append(f"  - known departure `{name}`: {crosscheck['departures'][name]}")
    return lines


def _evaluation(metrics: dict) -> list[str]:
    before, after, win = metrics["eval_before"], metrics["eval_after"], metrics["win_rate"]
    lines = ["| held-out metric (TRL eval) | before | after |", "|---|---|---|"]
    for key in ("rewards/accuracies", "rewards/margins", "loss"):
        lines.append(
            f"| {key} | {before.get('eval_' + key, float('nan')):.3f} | {after.get('eval_' + key, float('nan')):.3f} |"
        )
    lines.append("")
    if "win_rate" in win:
        lines.append(
            f"Win rate against the reference: **{win['win_rate']:.3f}** ({win['wins']} wins, {win['ties']} ties, "
            f"{win['losses']} losses on {win['n']} held-out prompts, greedy, judge `{win['judge']}`); mean answer "
            f"length {win['mean_length_policy']:.1f} vs {win['mean_length_reference']:.1f} characters."
        )
        sampled = [p for p in win.get("temperatures", []) if p["temperature"] > 0]
        if sampled:
            rates = ", ".join(f"{p['win_rate']:.3f} at T = {p['temperature']:g}" for p in sampled)
            lines.append(
                f"Sampled: {rates}. KL(policy ‖ reference): {win['kl']['mean']:.2f} ± {win['kl']['stderr']:.2f} nats."
            )
    else:
        lines.append(f"Win rate against the reference: not measured ({win['skipped']}).")
    displacement = metrics.get("likelihood_displacement", {})
    if displacement.get("displaced"):
        lines.append(
            f"Likelihood displacement: the chosen answers ended {-displacement['final_chosen']:.2f} nats "
            "less likely than under the reference (see report.md)."
        )
    return lines


def render(metrics: dict, script_args, training_args, model_args, crosscheck: dict | None, existing=None) -> str:
    """The card: Hub metadata, then the body below; ``existing`` (the card PEFT wrote) is merged in."""
    run = RunRecord.from_json(metrics["run"])
    return sharing.merged_card(
        existing,
        front_matter(run, script_args, model_args),
        body(run, metrics, script_args, training_args, model_args, crosscheck),
    )


def body(run: RunRecord, metrics: dict, script_args, training_args, model_args, crosscheck: dict | None) -> str:
    lines = [
        f"# {text(Path(training_args.output_dir).name)}: {text(run.model)} trained with DPO",
        "",
        _method(run, model_args),
        "",
        "## Data",
        "",
        f"Dataset {code(run.dataset)} through the {code(run.dataset_recipe)} recipe "
        f"({text(script_args.dataset_format)} format): {text(metrics['data']['train'])}; "
        f"{text(metrics['data']['test'])}.",
        "",
        "## Hyperparameters",
        "",
        *_hyperparameters(script_args, model_args, training_args),
        "",
        "## Cross-check verdict",
        "",
        *crosscheck_section(crosscheck, metrics.get("reference_guard")),
        "",
        "## Evaluation",
        "",
        *_evaluation(metrics),
        "",
        f"Trained {metrics['train']['global_step']} optimizer steps in {metrics['wall_time_s']['train']:.0f} s. "
        "Details: report.md, metrics.json, training_curves.png.",
        "",
        "## Use",
        "",
        "```python",
        _loading_code(training_args.output_dir, run.peft),
        "```",
        "",
        "`dpo-recipes merge` writes a standalone model (adapter merged into the base, safetensors).",
        "",
        "## Intended use and limitations",
        "",
        *_limitations(run),
    ]
    return "\n".join(lines) + "\n"


def front_matter(run: RunRecord, script_args, model_args) -> dict:
    """The Hub's metadata of the run's card (`dpo_recipes.training.sharing.front_matter`)."""
    mixture = [part["dataset"] for part in script_args.dataset_mixture or []]
    return sharing.front_matter(
        run.model,
        "adapter" if run.peft else "finetune",
        "peft" if run.peft else "transformers",
        mixture if run.dataset == "mixture" else [run.dataset],
        ["dpo", "trl", "dpo-recipes", policy_kind(model_args)],
    )


def _method(run: RunRecord, model_args) -> str:
    """What was trained, with which loss, against which reference."""
    adapter = f"a LoRA adapter (r={model_args.lora_r}, α={model_args.lora_alpha})"
    method = {
        "qlora": f"{adapter} on the 4-bit {model_args.bnb_4bit_quant_type.upper()}-quantized base (QLoRA)",
        "lora": adapter,
        "full": "every weight (full fine-tune)",
    }[policy_kind(model_args)]
    reference = "a frozen copy of the starting model"
    if run.peft:
        reference = "the base model with the adapter disabled (one set of weights)"
    if run.reference_logps:
        reference += f"; its log-probs were read from {code(run.reference_logps)}, computed once and checked"
    return (
        f"Direct Preference Optimization (loss {' + '.join(run.loss_type)}, β = {run.beta}) of {code(run.model)} "
        f"with TRL's DPOTrainer, training {method}. The reference policy is {reference}. Built with dpo-recipes."
    )


def _hyperparameters(script_args, model_args, training_args) -> list[str]:
    """The values that differ from the defaults in a table, then every value, folded."""
    changed = changed_hyperparameters(script_args, model_args, training_args)
    full = {type(c).__name__: _as_dict(c) for c in (script_args, model_args, training_args)}
    return [
        "Every value that differs from the defaults of TRL 1.16's DPOConfig/ModelConfig and this project's "
        "RecipeArguments (all values are in the folded list below):",
        "",
        "| hyperparameter | value |",
        "|---|---|",
        *[f"| {name} | {table_code(_value(value))} |" for name, value in sorted(changed.items())],
        "",
        "<details><summary>All hyperparameters</summary>",
        "",
        "```yaml",
        yaml.safe_dump(json.loads(json.dumps(full, default=str)), sort_keys=True, allow_unicode=True).strip(),
        "```",
        "",
        "</details>",
    ]


def _loading_code(output_dir: str, peft: bool) -> str:
    where = repr(str(output_dir))  # a Python literal whatever the path holds (quotes, newlines)
    if peft:
        return f"from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained({where})"
    return f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained({where})"


def _limitations(run: RunRecord) -> list[str]:
    lines = [
        "- For research on preference optimization and as a starting point for further tuning. It is not a "
        "safety-tuned assistant: it inherits the base model's knowledge, biases and failure modes, and DPO "
        "moves it only toward the preferences in the data above.",
        "- The implicit reward is measured on held-out pairs of the same distribution; it says nothing about "
        "other tasks. A win rate is only as good as its judge.",
        "- DPO often lengthens answers (compare the mean lengths above) and can over-optimize at high KL from "
        "the reference; check samples before use.",
    ]
    if run.model.startswith("dpo-recipes/tiny"):
        lines.append(
            "- This run used the embedded offline default: a ~1M-parameter model and a synthetic preference "
            "world. It demonstrates the pipeline; it is not a useful language model."
        )
    if run.model == "dpo-recipes/smollm2-135m-instruct":
        lines.append(
            "- The base is SmolLM2-135M-Instruct de-quantized from a Q4_1 GGUF file, not the original bf16 "
            "weights. Pairs judged by a sentiment lexicon (VADER) reward gushing, longer answers as much as "
            "better ones: compare the words and sentences in report.md."
        )
    return lines


def write_model_card(output_dir: str | os.PathLike, *args, **kwargs) -> Path:
    """README.md of the run, merged with the card PEFT wrote there when it saved the adapter."""
    path = Path(output_dir) / "README.md"
    existing = path.read_text() if path.is_file() else None
    return atomic_write_text(path, render(*args, **kwargs, existing=existing))
