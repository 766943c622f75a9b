"""Watching a DPO run for likelihood displacement: the chosen answers becoming *less* likely than under the
reference while the loss still falls.

DPO's loss depends only on the margin between chosen and rejected log-ratios, and the margin can grow by
pushing both log-probabilities down, the chosen one less than the rejected one. Then probability mass moves to
answers in neither set (Pal et al. 2024, "Smaug", §3; Razin et al. 2024, "Unintentional Unalignment"): a known
DPO failure that a falling loss curve does not show. TRL logs rewards/chosen = β·(log π(y_w|x) − log π_ref(y_w|x)),
so Δ log π(chosen) = rewards/chosen / β; a negative value is displacement.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from dpo_recipes.evaluation.reporting import pyplot, save_figure

logger = logging.getLogger(__name__)


class LikelihoodDisplacementMonitor(TrainerCallback):
    """Records Δ log π(chosen) and Δ log π(rejected) (nats per sequence, against the reference) at every
    training log, and warns once, in the log, when the chosen answers' log-probability falls below the
    reference's."""

    def __init__(self, beta: float):
        self.beta = beta
        self.history: list[dict] = []
        self.warned = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "rewards/chosen" not in logs or "eval_loss" in logs:
            return
        point = {
            "step": state.global_step,
            "chosen": logs["rewards/chosen"] / self.beta,
            "rejected": logs["rewards/rejected"] / self.beta,
        }
        self.history.append(point)
        if point["chosen"] < 0 and not self.warned and state.is_world_process_zero:
            self.warned = True
            logger.warning(
                "Likelihood displacement at step %d: the chosen answers are %.2f nats less likely than under the "
                "reference (the rejected ones %.2f nats). The margin grows by pushing both down; watch the judged "
                "win rate, not only the loss.",
                point["step"],
                -point["chosen"],
                -point["rejected"],
            )

    def summary(self) -> dict:
        if not self.history:
            return {"logged_steps": 0}
        chosen = [point["chosen"] for point in self.history]
        return {
            "logged_steps": len(self.history),
            "displaced_steps": sum(value < 0 for value in chosen),
            "final_chosen": chosen[-1],
            "final_rejected": self.history[-1]["rejected"],
            "min_chosen": min(chosen),
            "displaced": chosen[-1] < 0,
            "history": self.history,
        }

    def plot(self, path) -> None:
        figure, axis = pyplot().subplots(figsize=(5.5, 3.6), constrained_layout=True)
        steps = [point["step"] for point in self.history]
        for key in ("chosen", "rejected"):
            axis.plot(steps, [point[key] for point in self.history], marker=".", label=f"Δ log π({key})")
        axis.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        axis.set(xlabel="step", ylabel="log π − log π_ref (nats per answer)", title="likelihood displacement")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
        save_figure(figure, path)
