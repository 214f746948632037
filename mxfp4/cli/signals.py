"""Ctrl-C and SIGTERM during a command: cleanup runs, the exit code says which, and the message says truthfully
what was written. Library errors become one clean line."""

from __future__ import annotations

import functools
import os
import signal
import sys
import warnings

import click

from ..errors import CalibrationWarning, MXFP4Error, RepairWarning, TemplateWarning
from ..storage.atomic import COMMITTED
from .ranks import rank_prefix


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so every cleanup (temporary outputs, locks) runs as for Ctrl-C."""


# A signal that lands while a module is being imported is held back until the import is over: raising
# inside an import that C++ started (torch's extension imports Python modules while it initialises)
# makes the C++ side abort the process (SIGABRT) instead of unwinding, and the cleanup never runs.
_RECHECK_SECONDS = 0.02
_held: list[type[BaseException]] = []


def _inside_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _raise_when_safe(exception: type[BaseException], frame) -> None:
    if _inside_import(frame):
        if not _held:
            _held.append(exception)
        signal.setitimer(signal.ITIMER_REAL, _RECHECK_SECONDS)  # look again soon (SIGALRM below)
        return
    _held.clear()
    raise exception()


def install_signal_handlers() -> None:
    signal.signal(signal.SIGINT, lambda signum, frame: _raise_when_safe(KeyboardInterrupt, frame))
    signal.signal(signal.SIGTERM, lambda signum, frame: _raise_when_safe(Terminated, frame))
    signal.signal(signal.SIGALRM, lambda signum, frame: _raise_when_safe(_held[0], frame) if _held else None)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails the write (EFBIG) instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _ignore_late_signals() -> None:
    """The work is done and reported: a signal from now on (or one still held back) must not turn
    success into a failure."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    _held.clear()
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(number, signal.SIG_IGN)


def _leave(what: str, code: int) -> None:
    """Exit at once with code after an interrupt, saying truthfully what was written. The atomic outputs
    have already removed their temporary files by now; skipping interpreter teardown keeps a
    half-finished import (say, of torch, when the signal came early) from turning the exit into a death
    by signal."""
    done = ", ".join(str(p) for p in COMMITTED)
    click.echo(f"{what} after {done} was completely written" if done else f"{what}: no output was written", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# The library's parameter names -> the flags that set them, so that an error names both.
FLAGS = {
    "backend": "--backend",
    "chat_template": "--chat-template",
    "context": "--calibrate-context",
    "dtype": "--dtype",
    "expert_layout": "--expert-layout",
    "force": "--force",
    "lora_layout": "--lora-layout",
    "max_shard_size": "--max-shard-size",
    "rounding": "--rounding",
    "samples": "--calibrate-samples",
    "scale_rule": "--scale-rule",
    "stride": "--stride",
    "strict": "--strict",
    "to": "--to",
}


_default_showwarning = warnings.showwarning
# warnings the library gives users about their files and runs: one 'warning:' line each
USER_WARNINGS = (RepairWarning, TemplateWarning, CalibrationWarning)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, USER_WARNINGS):
        click.echo(f"warning: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


def flag_of(parameter: str | None) -> str | None:
    return FLAGS.get(parameter) if parameter else None


def clean_errors(command=None, *, input_error_exit: int = 1):
    """Library errors and OS errors -> one 'error: ...' line on stderr, exit ``input_error_exit`` (1; 2 for
    the commands whose exit 1 means a failed check); Ctrl-C -> 130; SIGTERM -> 143. No traceback, and (by the
    library's atomic outputs) nothing partial left behind."""
    if command is None:
        return functools.partial(clean_errors, input_error_exit=input_error_exit)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        install_signal_handlers()
        try:
            with warnings.catch_warnings():
                for category in USER_WARNINGS:
                    warnings.simplefilter("default", category)
                warnings.showwarning = _show_warning
                return command(*args, **kwargs)
        except MXFP4Error as error:
            _ignore_late_signals()  # before reporting, so nothing interrupts the report
            flag = flag_of(error.parameter)
            rank = "" if str(error).startswith(rank_prefix()) else rank_prefix()  # collectives name it already
            click.echo(f"error: {rank}{error}" + (f" (option {flag})" if flag else ""), err=True)
            sys.exit(input_error_exit)
        except OSError as error:
            _ignore_late_signals()
            where = f" ({error.filename})" if error.filename else ""
            click.echo(f"error: {rank_prefix()}{error.strerror or error}{where}; the output was not written", err=True)
            sys.exit(input_error_exit)
        except Terminated:
            _leave("terminated", 143)
        except KeyboardInterrupt:
            _leave("interrupted", 130)
        finally:  # success, or an error that is what happened: a signal held back now would only hide it
            _ignore_late_signals()

    return wrapper
