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
from dataclasses import dataclass
from typing import Any, Callable, NoReturn, Optional, Sequence, TypeVar

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


# ---- key=value command lines ------------------------------------------------------------------------
# Every aotp command takes Hydra-style ``key=value`` arguments, as ``aotp-run`` does (``null`` for none,
# ``[a,b]`` or ``a,b`` for a list). ``aotp-run`` composes a Hydra config; the other commands have a handful
# of options and no config groups, so they share this small parser instead of a Hydra compose: no schema
# file per command, no Hydra start-up, and the same one-line refusals as the rest of this module. The
# argparse flags these commands had (``--out``, ``--batch-size`` ...) still work with a one-line
# deprecation note on stderr.

NULLS = ("null", "none", "~")


@dataclass(frozen=True)
class Option:
    """One ``name=value`` option. ``kind`` converts a value (``str``, ``int``, ``float``, ``bool``, ``Path``);
    ``many`` makes it a list (``name=[a,b]``, ``name=a,b``, or the key repeated); ``flags`` are its old
    argparse spellings, kept working with a deprecation note (a ``bool`` flag takes no value and sets
    ``flag_value``)."""

    name: str
    help: str = ""
    default: Any = None
    kind: Callable[[str], Any] = str
    many: bool = False
    required: bool = False
    nullable: bool = False
    minimum: Optional[float] = None
    choices: tuple[str, ...] = ()
    metavar: str = "VALUE"
    flags: tuple[str, ...] = ()
    flag_value: Any = True


class KeyValueParser:
    """Parse ``key=value`` arguments into ``{name: value}`` (defaults filled in). With ``passthrough`` any
    other ``key=value`` is returned apart, in order (the Hydra overrides of ``aotp-estimate``)."""

    def __init__(self, prog: str, summary: str, options: Sequence[Option], examples: Sequence[str] = (),
                 passthrough: Optional[str] = None):
        self.prog, self.summary, self.examples, self.passthrough = prog, summary, tuple(examples), passthrough
        self.options = {option.name: option for option in options}
        # An option without explicit flags keeps its argparse spelling: batch_size <- --batch-size.
        self.flags = {flag: option for option in options
                      for flag in (option.flags or ("--" + option.name.replace("_", "-").replace(".", "-"),))}

    def usage(self) -> str:
        shown = [f"{o.name}={_metavar(o)}" for o in self.options.values() if o.required]
        if len(self.options) <= 8:
            shown += [f"[{o.name}={_metavar(o)}]" for o in self.options.values() if not o.required]
        else:
            shown.append("[key=value ...]")
        return f"usage: {self.prog} " + " ".join(([self.passthrough] if self.passthrough else []) + shown)

    def help(self) -> str:
        import textwrap

        lines = [self.usage(), "", self.summary, "", "options (key=value; null for none; lists as key=[a,b]):"]
        for o in self.options.values():
            name = f"{o.name}={_metavar(o)}"
            default = "" if "default" in o.help else "(required)" if o.required else f"(default: {_show(o.default)})"
            text = " ".join(filter(None, [o.help, default]))
            body = textwrap.wrap(text, 110 - 28) or [""]
            if len(name) > 24:
                lines += [f"  {name}"] + [f"{'':<28}{line}" for line in body]
            else:
                lines += [f"  {name:<26}{body[0]}"] + [f"{'':<28}{line}" for line in body[1:]]
        if self.examples:
            lines += ["", "examples:"] + [f"  {example}" for example in self.examples]
        return "\n".join(lines)

    def parse(self, argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
        values: dict[str, Any] = {}
        rest: list[str] = []
        tokens = list(argv)
        while tokens:
            token = tokens.pop(0)
            if token in ("-h", "--help"):
                print(self.help())
                raise SystemExit(0)
            if token.startswith("--"):
                flag, sep, inline = token.partition("=")
                option = self.flags.get(flag)
                if option is None:
                    raise UsageError(f"{self.prog}: unknown argument {token!r}; arguments are key=value: "
                                     f"{', '.join(self.options)}. {self.usage()}")
                if option.kind is bool and not sep:
                    raw = [str(option.flag_value).lower()]
                elif sep:
                    raw = [inline]
                else:
                    raw = []
                    while tokens and not tokens[0].startswith("--") and "=" not in tokens[0] and (option.many or not raw):
                        raw.append(tokens.pop(0))
                    if not raw and not option.many:
                        raise UsageError(f"{self.prog}: {flag} needs a value. {self.usage()}")
                shown = raw[0] if len(raw) == 1 and not option.many else f"[{','.join(raw)}]"
                print(f"{self.prog}: {flag} is deprecated; use {option.name}={shown}", file=sys.stderr)
                self._set(values, option, ",".join(raw) if option.many else raw[0])
                continue
            key, sep, value = token.partition("=")
            if not sep:
                raise UsageError(f"{self.prog}: argument {token!r} is not key=value. {self.usage()}")
            if key in self.options:
                self._set(values, self.options[key], value)
            elif self.passthrough:
                rest.append(token)
            else:
                raise UsageError(f"{self.prog}: unknown argument {key!r}; valid: {', '.join(self.options)}. {self.usage()}")
        for option in self.options.values():
            if option.name not in values:
                if option.required:
                    raise UsageError(f"{self.prog}: missing {option.name}=. {self.usage()}")
                values[option.name] = list(option.default) if option.many and option.default is not None else option.default
        return values, rest

    def _set(self, values: dict[str, Any], option: Option, text: str) -> None:
        if option.many and option.nullable and text.strip().lower() in NULLS:
            values[option.name] = None
        elif option.many:
            items = [item.strip() for item in text.strip().removeprefix("[").removesuffix("]").split(",") if item.strip()]
            values.setdefault(option.name, []).extend(self._convert(option, item, text) for item in items)
        else:
            values[option.name] = self._convert(option, text, text)

    def _convert(self, option: Option, text: str, whole: str) -> Any:
        where = f"{option.name}={whole!r}"
        if option.nullable and text.strip().lower() in NULLS:
            return None
        if option.kind is bool:
            if text.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise UsageError(f"{where}: expected true or false")
            return text.strip().lower() in ("true", "1", "yes")
        if option.choices and text not in option.choices:
            raise UsageError(f"{where}; valid: {', '.join(option.choices)}")
        try:
            value = option.kind(text)
        except ValueError:
            value = None
        if option.kind in (int, float):
            low = option.minimum
            if value is None or (low is not None and value < low):
                need = ("a positive integer" if option.kind is int and low == 1 else
                        f"{'an integer' if option.kind is int else 'a number'}" + (f" >= {low:g}" if low is not None else ""))
                raise UsageError(f"{where}: expected {need}")
        return value


def _metavar(option: Option) -> str:
    if option.metavar != "VALUE":
        one = option.metavar
    elif option.choices:
        one = "|".join(option.choices)
    else:
        one = {int: "N", float: "X", bool: "true|false"}.get(option.kind, "VALUE")
    return f"[{one},...]" if option.many else one


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)
