"""Commands under torchrun: which may run on several ranks, joining the process group around them, and rank 0
alone printing. Reads torchrun's environment without importing torch, so other commands start as fast as ever."""

from __future__ import annotations

import contextlib
import functools
import io
import os

import click

# The commands that split their work over ranks; any other command under torchrun would run N times over.
TORCHRUN_COMMANDS = ("convert", "merge-lora", "eval")  # convert and merge-lora only with --calibrate
TORCHRUN_EVAL_COMMANDS = ("ppl", "compare", "baseline", "gate")


def launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_prefix() -> str:
    """'rank R of N: ' under torchrun (an error line then says which process it came from), else ''."""
    size = launched_world_size()
    return f"rank {os.environ.get('RANK', '?')} of {size}: " if size > 1 else ""


def refuse_outside(command: str | None, allowed) -> None:
    """A usage error when torchrun launched a command that cannot split its work."""
    if launched_world_size() > 1 and command is not None and command not in allowed:
        raise click.UsageError(
            f"'{command}' runs in one process; under torchrun only {', '.join(allowed)} split their work over ranks"
        )


def torchrun_job(command):
    """Run ``command`` on every rank of a torchrun job (a plain call otherwise): join the process group
    (gloo, or nccl for --device cuda, which becomes each rank's own GPU), print from rank 0 only, leave the
    group at the end (together when every rank completed)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        if launched_world_size() <= 1:
            return command(*args, **kwargs)
        from .. import distributed

        if "device" in kwargs:
            kwargs["device"] = str(distributed.rank_device(kwargs["device"]))
        world = distributed.start(kwargs.get("device"))
        try:
            if world.leader:
                result = command(*args, **kwargs)
            else:
                with contextlib.redirect_stdout(io.StringIO()):  # the same results; rank 0 prints them
                    result = command(*args, **kwargs)
        except SystemExit:  # an exit status every rank reaches alike (eval gate's 0 or 1)
            distributed.finish(world)
            raise
        except BaseException:
            distributed.stop()  # no waiting for peers that may have stopped too
            raise
        distributed.finish(world)
        return result

    return wrapper


def require_calibration(calibrating: bool, command: str) -> None:
    if launched_world_size() > 1 and not calibrating:
        raise click.UsageError(
            f"under torchrun, {command} splits only calibration over ranks (--calibrate / --calibrate-text); "
            f"without it, run in one process"
        )
