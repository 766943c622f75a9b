"""The process's CPU threads, chosen deliberately.

On a small CPU machine threads are the difference between a run and a stall: two processes with two torch
threads each on two cores ran 3–4× slower than one thread each. The default is the cores this process may
use divided by the processes of this machine (``LOCAL_WORLD_SIZE``, set by accelerate/torchrun), at least 1.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

import torch

logger = logging.getLogger(__name__)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to ``requested`` or the default above; return the number set."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = requested or max(1, available_cores() // processes)
    torch.set_num_threads(threads)
    logger.info("torch threads: %d (%d cores, %d process(es) on this machine)", threads, available_cores(), processes)
    return threads


def launched_by_a_launcher() -> bool:
    """True in a process started by ``accelerate launch`` (ACCELERATE_MIXED_PRECISION) or torchrun (LOCAL_RANK)."""
    return "ACCELERATE_MIXED_PRECISION" in os.environ or "LOCAL_RANK" in os.environ


def stop_with_launcher() -> bool:
    """Make this process stop, cleanly, when its launcher goes.

    ``accelerate launch`` runs the recipe as a child and, on SIGTERM, dies without passing the signal on: the
    child would train to the end, unseen. On Linux the kernel can send the child a signal when its parent
    ends (prctl PR_SET_PDEATHSIG); SIGTERM then raises SystemExit here, so open files and locks are released
    and nothing half-written is published (final files are moved into place whole). A process started by
    hand (``python recipes/...``, nohup) is left alone. Returns whether the link was made.
    """
    if not launched_by_a_launcher() or not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("Could not link this process to its launcher (prctl errno %d)", ctypes.get_errno())
        return False
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if os.getppid() == 1:  # the launcher ended before the link was made
        _exit_on_sigterm(signal.SIGTERM, None)
    return True


PR_SET_PDEATHSIG = 1


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(f"stopped by signal {signum} (the launcher ended or the run was asked to stop)")


def finish_collectives(accelerator) -> None:
    """After a run's last collective: every rank waits for the others, then every rank but the main one closes
    its process group (it has nothing left to do); the main one goes on writing outputs and closes its own at
    the end (`close_process_group`).

    A rank that exited with its gloo process group open was aborted by the C++ runtime ("terminate called
    without an active exception", SIGABRT) about once in 10 two-process CPU runs, and the launcher then killed
    the main process mid-write. The main process keeps its group until it is done: closing it earlier would make
    the next TrainingArguments it builds (the model card compares against a default DPOConfig) set up a new
    process group and wait forever for ranks that have left."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        accelerator.wait_for_everyone()
        if not accelerator.is_main_process:
            torch.distributed.destroy_process_group()


def close_process_group() -> None:
    """Close this process's process group, if it has one (the last thing a distributed run does)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# Variables a distributed launcher (torchrun, accelerate launch) sets for its workers. A helper process started
# by a worker must not inherit them, or it would join (and wait for) the run's process group.
LAUNCHER_VARIABLES = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)


def single_process_environment(**changes: str) -> dict[str, str]:
    """This process's environment without the launcher's variables (plus ``changes``), for a helper process."""
    environment = {key: value for key, value in os.environ.items() if key not in LAUNCHER_VARIABLES}
    return {**environment, **changes}
