"""Colour in one place.

Every ANSI escape the project prints comes from a :class:`Style`. A disabled style returns text unchanged, so
callers never branch on colour. Colour is off when the stream is not a TTY, when ``NO_COLOR`` is set (any
value), or when ``TERM=dumb``; ``FORCE_COLOR`` or an explicit ``--vsp-color=yes`` turns it on.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TextIO

# a perceptual-ish ramp of the 256-colour palette from dark blue to yellow (viridis-like)
RAMP_256 = (17, 18, 19, 24, 25, 31, 30, 36, 35, 71, 77, 113, 149, 185, 221, 226)
SHADES = " ░▒▓█"


def colour_enabled(setting: str | bool | None = None, stream: TextIO | None = None) -> bool:
    """Decide whether to colour output: explicit setting > NO_COLOR > FORCE_COLOR > TTY detection."""
    if isinstance(setting, bool):
        return setting
    if setting in ("yes", "always", "on", "true", "1"):
        return True
    if setting in ("no", "never", "off", "false", "0"):
        return False
    if "NO_COLOR" in os.environ:
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    stream = stream if stream is not None else sys.stdout
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass(frozen=True)
class Style:
    enabled: bool = False

    def _wrap(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap(text, "1")

    def dim(self, text: str) -> str:
        return self._wrap(text, "2")

    def red(self, text: str) -> str:
        return self._wrap(text, "31")

    def green(self, text: str) -> str:
        return self._wrap(text, "32")

    def yellow(self, text: str) -> str:
        return self._wrap(text, "33")

    def cyan(self, text: str) -> str:
        return self._wrap(text, "36")

    def cell(self, text: str, level: float) -> str:
        """``text`` on a background shade for ``level`` in [0, 1] (a shade glyph prefix when colour is off)."""
        level = min(max(level, 0.0), 1.0)
        if not self.enabled:
            return SHADES[round(level * (len(SHADES) - 1))] + text
        colour = RAMP_256[round(level * (len(RAMP_256) - 1))]
        fg = 16 if level > 0.55 else 231  # black on light cells, white on dark ones
        return f"\x1b[48;5;{colour}m\x1b[38;5;{fg}m {text}\x1b[0m"

    def half_block(self, top: float, bottom: float, *, rgb: tuple[tuple[int, int, int], ...] | None = None) -> str:
        """One character showing two stacked cells (levels in [0, 1], or explicit RGB colours)."""
        if not self.enabled:
            level = max(top, bottom)
            return SHADES[round(min(max(level, 0.0), 1.0) * (len(SHADES) - 1))]
        if rgb is not None:
            (r1, g1, b1), (r2, g2, b2) = rgb
            return f"\x1b[38;2;{r1};{g1};{b1}m\x1b[48;2;{r2};{g2};{b2}m▀\x1b[0m"
        c1 = RAMP_256[round(min(max(top, 0.0), 1.0) * (len(RAMP_256) - 1))]
        c2 = RAMP_256[round(min(max(bottom, 0.0), 1.0) * (len(RAMP_256) - 1))]
        return f"\x1b[38;5;{c1}m\x1b[48;5;{c2}m▀\x1b[0m"


def visible_len(text: str) -> int:
    """Length of ``text`` without ANSI escapes."""
    import re

    return len(re.sub(r"\x1b\[[0-9;]*m", "", text))
