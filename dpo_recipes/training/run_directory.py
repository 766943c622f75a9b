"""A run's output directory: one run at a time (a lock), resuming from the newest complete checkpoint, and
the final model moved into place whole."""

import contextlib
import fcntl
import json
import logging
import os
import shutil
from pathlib import Path

from dpo_recipes.core.errors import ConfigError, os_problem
from dpo_recipes.core.files import atomic_path, follow_umask

logger = logging.getLogger(__name__)


def trainer_state(folder: Path) -> dict | None:
    """The trainer state saved in ``folder``, or None when it is missing or does not parse (a save cut off by a
    kill, or a full disk leaving a 0-byte file): such a checkpoint is incomplete."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and "global_step" in state else None


def checkpoint_to_resume(value: str | None, output_dir: str) -> str | None:
    """``--resume_from_checkpoint``: a checkpoint path, or ``last`` for the newest *complete* checkpoint in the
    output directory. transformers writes trainer_state.json last, so a checkpoint whose state is missing or
    unreadable was cut off while being written; it is skipped with a warning, never resumed from. A run that
    already finished is not trained again."""
    if value is None:
        return None
    if str(value).lower() not in ("last", "true"):
        if trainer_state(Path(value)) is None:
            raise ConfigError(f"checkpoint {value!r} is missing or incomplete (no readable trainer_state.json)")
        return value
    finished = trainer_state(Path(output_dir)) if (Path(output_dir) / "metrics.json").is_file() else None
    if finished is not None:
        raise ConfigError(
            f"the run in {output_dir!r} already finished at step {finished['global_step']} "
            "(metrics.json holds its results): nothing to resume. To train further, start a new run "
            "with another --output_dir"
        )
    numbered = [path for path in Path(output_dir).glob("checkpoint-*") if path.name.split("-", 1)[1].isdigit()]
    found = sorted(numbered, key=lambda path: int(path.name.split("-", 1)[1]))  # not a user's "checkpoint-old"
    complete = [path for path in found if trainer_state(path) is not None]
    for partial in sorted(set(found) - set(complete)):
        logger.warning("Ignoring %s: its trainer_state.json is missing or unreadable (cut off while written)", partial)
    if not complete:
        logger.warning("No complete checkpoint in %s: training from the start", output_dir)
        return None
    logger.info("Resuming from %s", complete[-1])
    return str(complete[-1])


@contextlib.contextmanager
def output_dir_lock(output_dir: str):
    """One run at a time per output directory: a second run into the same directory fails at once instead of
    mixing its files with the first's. Only the main process (RANK 0) takes the lock; the OS frees it when the
    process ends, however it ends."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        handle = open(Path(output_dir) / ".dpo-recipes.lock", "a+")  # noqa: SIM115 (held for the whole run)
    except OSError as error:
        raise os_problem(error, f"output_dir {output_dir!r} cannot be used") or error from error
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.seek(0)
            raise ConfigError(
                f"output_dir {output_dir!r} is in use by another run (process {handle.read().strip()}); "
                "wait for it or choose another --output_dir"
            ) from error
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def save_final_model(trainer, output_dir: str) -> None:
    """The trained adapter (or model) and trainer state, each file moved into place whole: a run killed while
    saving leaves a scratch folder, never a truncated adapter_model.safetensors that looks complete."""
    scratch = Path(output_dir) / ".final-model.partial"
    if trainer.accelerator.is_main_process and scratch.exists():
        shutil.rmtree(scratch)
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(scratch))  # every process takes part (sharded weights are gathered here)
    except Exception as error:  # a full disk or a lost permission is the user's to fix, in one line
        what = f"the final model could not be written into {output_dir} (nothing half-written was put in place)"
        raise os_problem(error, what) or error from error
    if trainer.accelerator.is_main_process:
        for item in scratch.iterdir():
            if item.is_file():
                follow_umask(item)
            os.replace(item, Path(output_dir) / item.name)
        scratch.rmdir()
        with atomic_path(Path(output_dir) / "trainer_state.json") as state:
            trainer.state.save_to_json(str(state))
    trainer.accelerator.wait_for_everyone()
