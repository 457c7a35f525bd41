"""How every aotp command refuses bad input: one line on stderr, exit code 2, no traceback.

A refusal is an error the user can fix (a bad option value, a missing file, an unknown name); its
exception class derives from :class:`Refusal`, so each CLI catches them all in one place
(:func:`guarded`) and anything else (a bug) still shows its traceback. ``argparse`` refusals take
the same form through :class:`ArgumentParser`. Light on imports: the registries and the task
loader import it before torch.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, NoReturn, TypeVar

EXIT_REFUSED = 2  # as argparse and Hydra's usage errors: the input was refused, nothing ran

T = TypeVar("T")


class Refusal(Exception):
    """Base of the errors a user fixes by changing the input; the message says what to change."""


class ConfigError(Refusal, ValueError):
    """A config value that cannot work; the message names the option and its valid values."""


class UsageError(Refusal, ValueError):
    """Command-line arguments that cannot work (a missing file, a bad flag value)."""


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded into single spaces."""
    return " ".join(str(text).split())


def refuse(message: str) -> NoReturn:
    """Print ``Error: <message>`` as one line on stderr and exit with :data:`EXIT_REFUSED`."""
    sys.stdout.flush()
    print(f"Error: {one_line(message)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_REFUSED)


def guarded(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a CLI's ``main``: a :class:`Refusal` (or a ``SystemExit`` carrying a message) becomes one line
    on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Refusal as error:
            refuse(str(error))
        except SystemExit as error:
            if isinstance(error.code, str):  # SystemExit("message") would exit 1 with the message as is
                refuse(error.code)
            raise

    return wrapper


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line refusals (``Error: <prog>: <message> (see --help)``, exit 2)."""

    def error(self, message: str) -> NoReturn:
        refuse(f"{self.prog}: {message} (see --help)")
