"""The likelihood-displacement monitor: what it records, when it warns, what the report says."""

import logging
from types import SimpleNamespace

from dpo_recipes.evaluation.comparison import style
from dpo_recipes.evaluation.reporting import displacement_section
from dpo_recipes.training.monitoring import LikelihoodDisplacementMonitor


def feed(monitor, logs: list[dict]) -> None:
    for step, log in enumerate(logs, start=1):
        state = SimpleNamespace(global_step=step, is_world_process_zero=True)
        monitor.on_log(None, state, None, logs=log)


def test_warns_once_when_the_chosen_answers_fall_below_the_reference(caplog):
    monitor = LikelihoodDisplacementMonitor(beta=0.1)
    with caplog.at_level(logging.WARNING, logger="dpo_recipes.training.monitoring"):
        feed(
            monitor,
            [
                {"loss": 0.69, "rewards/chosen": 0.02, "rewards/rejected": -0.01},
                {"eval_loss": 0.6, "rewards/chosen": -5.0, "rewards/rejected": -9.0},  # an eval log: not training
                {"loss": 0.5, "rewards/chosen": -0.05, "rewards/rejected": -0.4},
                {"loss": 0.4, "rewards/chosen": -0.2, "rewards/rejected": -0.9},
                {"learning_rate": 1e-4},
            ],
        )
    warnings = [record for record in caplog.records if "Likelihood displacement" in record.message]
    assert len(warnings) == 1 and "step 3" in warnings[0].message
    summary = monitor.summary()
    assert summary["logged_steps"] == 3 and summary["displaced_steps"] == 2 and summary["displaced"]
    assert abs(summary["final_chosen"] - (-2.0)) < 1e-9 and abs(summary["min_chosen"] - (-2.0)) < 1e-9
    assert abs(summary["final_rejected"] - (-9.0)) < 1e-9
    assert "**Warning: likelihood displacement.**" in "\n".join(displacement_section(summary))


def test_no_warning_when_the_chosen_answers_gain():
    monitor = LikelihoodDisplacementMonitor(beta=0.5)
    feed(monitor, [{"loss": 0.6, "rewards/chosen": 0.1, "rewards/rejected": -0.3}])
    summary = monitor.summary()
    assert not summary["displaced"] and summary["final_chosen"] == 0.2 and not monitor.warned
    assert "did not end less likely" in "\n".join(displacement_section(summary))
    assert displacement_section(LikelihoodDisplacementMonitor(0.1).summary()) == []


def test_style_counts_words_and_sentences():
    measured = style(["Great place.", "Good food! Nice staff. Would return?", ""])
    assert measured["mean_words"] == (2 + 6 + 0) / 3
    assert measured["mean_sentences"] == (1 + 3 + 0) / 3
    assert measured["share_multi_sentence"] == 1 / 3
