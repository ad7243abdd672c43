"""The project's one error family.

Every error a user can cause (a bad case file, a bad image, an SAE that does not fit the model, an unknown
concept name) is raised as a :class:`VspError` carrying *where* (file, line, field), *what was received*,
*what is allowed* and *the fix*. The pytest plugin and the CLI print ``str(error)`` and nothing else unless
``--vsp-debug`` is given, so the message must stand on its own. Errors from inside torch/transformers are
caught at the boundary that knows the context and re-raised as one of these.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VspError(Exception):
    """A user-facing error: one message naming the place, what was received, what is allowed and the fix."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        field: str | None = None,
        received: object = None,
        allowed: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        self.received = received
        self.allowed = allowed
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = str(self.file) + (f":{self.line}" if self.line is not None else "")
        if self.field:
            where = f"{where}: field '{self.field}'" if where else f"field '{self.field}'"
        parts = [f"{where}: {self.message}" if where else self.message]
        if self.received is not None:
            parts.append(f"received: {self.received!r}")
        if self.allowed:
            parts.append(f"allowed: {self.allowed}")
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "\n  ".join(parts)

    def with_context(self, *, file: str | None = None, line: int | None = None) -> VspError:
        """Return the same error with a file/line filled in where it was not known at raise time.

        A line belongs to its file: it is filled in only when the error names no file or names that same file
        (an error that already names another place keeps it whole, never ``that-place:<our line>``)."""
        same_file = self.file is None or file is None or str(self.file) == str(file)
        if file is not None and self.file is None:
            self.file = file
        if line is not None and self.line is None and same_file:
            self.line = line
        self.args = (self.render(),)
        return self


class CaseError(VspError):
    """A case document (YAML or Python) is invalid."""


class SAEError(VspError):
    """An SAE folder is unreadable, inconsistent, or does not fit the model."""


class ModelError(VspError):
    """A model cannot be loaded or no adapter supports it."""


class InputError(VspError):
    """An image, prompt, token or concept given at run time is unusable."""


def closest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The closest known names to ``name`` (for 'did you mean' hints)."""
    choices = list(choices)
    found = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not found:
        lowered = {c.lower(): c for c in choices}
        found = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.3)]
    return found


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    hits = closest(name, choices)
    return f"did you mean {', '.join(repr(h) for h in hits)}?" if hits else None
