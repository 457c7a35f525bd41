"""Name -> object registries with "did you mean" errors.

Methods, metrics, task formatters and backbone builders register themselves here by name, so the
runner never branches on a name and tests can parametrize over every registered entry.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from aotp.cli import Refusal

T = TypeVar("T")


class UnknownChoiceError(Refusal, KeyError):
    """An option value that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0])


def unknown_choice_message(kind: str, name: str, choices: list[str], option: str | None = None) -> str:
    """One sentence naming the bad value, the closest valid ones and every valid choice."""
    where = f" (config option `{option}`)" if option else ""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"Unknown {kind} {name!r}{where}.{hint} Valid choices: {', '.join(sorted(choices))}."


class Registry(Generic[T]):
    """A named collection of objects of one kind (``Registry("method")``)."""

    def __init__(self, kind: str, option: str | None = None):
        self.kind = kind
        self.option = option
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownChoiceError(unknown_choice_message(self.kind, name, list(self._entries), self.option)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return sorted(self._entries)
