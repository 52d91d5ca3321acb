"""Typed, bounded values: the rules config classes declare for their fields, and command-line flags use.

A config class lists a rule per field (``RULES = {"z_dim": Int(1, 4096), ...}``) and calls
:func:`check_fields` in its ``validate``; a flag takes the same rule as its argparse ``type=``
(``type=Int(1, 100).flag``), so a value read from a file and one typed on the command line meet one
check. Every failure is a :class:`~pv3d_core.errors.ConfigError` (or argparse's error for flags) naming
the field or flag, the accepted range and the value given; non-finite numbers never pass.

This module imports nothing from the project but its errors, so every module may use it.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .errors import ConfigError


#: limits shared by the library and the command line
MAX_FRAMES = 100_000          # frames of one clip (over an hour at 25 fps)
MAX_FPS = 240.0               # frame rate of an mp4
MAX_SEEDS = 10_000            # seeds of one `pv3d generate` (one clip each)
SEED = None                   # set below: Int(0, 2**32 - 1), numpy's seed range


def _show(value) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


class Rule:
    """Checks and normalises one value: ``check(name, value)`` returns it or raises ConfigError."""
    optional = False

    def check(self, name: str, value):
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{name} must be {self.describe()}, not None")
        return self._check(name, value)

    def _check(self, name, value):
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def parse(self, text: str):
        """The value of a command-line string (before :meth:`check`)."""
        return text

    def flag(self, text: str):
        """argparse ``type=``: the checked value of ``text``; a one-line error otherwise."""
        try:
            return self.check("value", self.parse(text))
        except (ConfigError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}") from None

    def fail(self, name, value):
        return ConfigError(f"{name} must be {self.describe()}{' or None' if self.optional else ''}, got {_show(value)}")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Int(Rule):
    lo: int
    hi: int
    optional: bool = False
    power_of_two: bool = False

    def _check(self, name, value):
        if isinstance(value, bool):
            raise self.fail(name, value)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or not self.lo <= value <= self.hi:
            raise self.fail(name, value)
        if self.power_of_two and value & (value - 1):
            raise self.fail(name, value)
        return value

    def parse(self, text):
        t = text.strip()
        if not t.lstrip("+-").isdigit() or len(t) > 30:
            raise ValueError(text)
        return int(t)

    def describe(self):
        what = "a power of two" if self.power_of_two else "an integer"
        return f"{what} within {_fmt(self.lo)}..{_fmt(self.hi)}" if self.lo != self.hi else f"{_fmt(self.lo)}"


@dataclass(frozen=True)
class Float(Rule):
    """A finite number in [lo, hi] (``(lo, hi]`` when ``lo_open``)."""
    lo: float
    hi: float
    optional: bool = False
    lo_open: bool = False

    def _check(self, name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(name, value)
        v = float(value)
        if not math.isfinite(v) or v > self.hi or v < self.lo or (self.lo_open and v == self.lo):
            raise self.fail(name, value)
        return value if isinstance(value, int) else v     # an int stays one (configs round-trip unchanged)

    def parse(self, text):
        return float(text)

    def describe(self):
        return f"a finite number {'>' if self.lo_open else '>='} {_fmt(float(self.lo))} and <= {_fmt(float(self.hi))}"


@dataclass(frozen=True)
class Bool(Rule):
    optional: bool = False

    def _check(self, name, value):
        if not isinstance(value, bool):
            raise self.fail(name, value)
        return value

    def describe(self):
        return "true or false"


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def parse_bool(text: str) -> bool | None:
    """True or False for the usual words (1/true/yes/on, 0/false/no/off; any case, spaces ignored),
    None for anything else. The one reading of a yes/no typed by a user, in a flag or an environment
    variable."""
    word = text.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def env_flag(name: str, default: bool) -> bool:
    """The yes/no environment variable ``name``: ``default`` when unset or empty; a value that is not
    one of :func:`parse_bool`'s words also gives ``default``, with a warning naming it."""
    import os
    import warnings

    text = os.environ.get(name, "")
    if not text.strip():
        return default
    flag = parse_bool(text)
    if flag is None:
        warnings.warn(f"{name}={text!r} is neither {'/'.join(TRUE_WORDS)} nor {'/'.join(FALSE_WORDS)}; "
                      f"using the default ({'on' if default else 'off'})", stacklevel=2)
        return default
    return flag


@dataclass(frozen=True)
class Choice(Rule):
    values: tuple
    optional: bool = False

    def _check(self, name, value):
        if type(value) not in {type(v) for v in self.values} or value not in self.values:
            raise self.fail(name, value)
        return value

    def describe(self):
        return "one of " + ", ".join(repr(v) for v in self.values)


@dataclass(frozen=True)
class Str(Rule):
    max_len: int = 4096
    optional: bool = False
    nonempty: bool = False

    def _check(self, name, value):
        if not isinstance(value, str) or len(value) > self.max_len or (self.nonempty and not value) or "\0" in value:
            raise self.fail(name, value)
        return value

    def describe(self):
        return f"{'non-empty ' if self.nonempty else ''}text of at most {self.max_len} characters"


@dataclass(frozen=True)
class Seq(Rule):
    """A list (or tuple) of ``lo_len``..``hi_len`` items, each checked by ``item``; returned as a tuple
    (as a list when ``as_list``: a value inside a JSON object, which must round-trip unchanged)."""
    item: Rule
    lo_len: int
    hi_len: int
    optional: bool = False
    as_list: bool = False

    def _check(self, name, value):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) \
                or not self.lo_len <= len(value) <= self.hi_len:
            raise self.fail(name, value)
        out = [self.item.check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        return out if self.as_list else tuple(out)

    def describe(self):
        n = f"{self.lo_len}" if self.lo_len == self.hi_len else f"{self.lo_len}..{self.hi_len}"
        return f"a list of {n} items, each {self.item.describe()}"


@dataclass(frozen=True)
class Keys(Rule):
    """A dict whose known keys follow their rules; unknown keys are refused unless ``open``."""
    rules: tuple          # ((key, Rule), ...)
    open: bool = False
    optional: bool = False

    def _check(self, name, value):
        if not isinstance(value, dict):
            raise self.fail(name, value)
        known = dict(self.rules)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{name} has a key that is not text: {_show(k)}")
            if k in known:
                out[k] = known[k].check(f"{name}.{k}", v)
            elif self.open:
                out[k] = v
            else:
                raise ConfigError(f"{name} has an unknown key {k!r}; known: {', '.join(known) or 'none'}")
        return out

    def describe(self):
        return "a JSON object"


SEED = Int(0, 2 ** 32 - 1)


def check_fields(obj, rules: dict, what: str = "") -> None:
    """Check every field of a (dataclass) object named in ``rules`` in place: normalised values are
    written back; the first bad one raises :class:`ConfigError` naming ``what.field``."""
    for name, rule in rules.items():
        value = getattr(obj, name)
        object.__setattr__(obj, name, rule.check(f"{what}{name}", value))


def positive_finite(name: str, value, hi: float = 1e9) -> float:
    """A shortcut for one-off checks: ``value`` as a finite float in (0, hi]."""
    return Float(0.0, hi, lo_open=True).check(name, value)


__all__ = ["MAX_FRAMES", "MAX_FPS", "MAX_SEEDS", "SEED", "Rule", "Int", "Float", "Bool", "Choice", "Str", "Seq", "Keys", "check_fields", "positive_finite"]
