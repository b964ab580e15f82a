"""`ConfigError` and the value checks every config and command line shares.

A config dataclass validates itself in ``__post_init__`` and raises `ConfigError` naming its
fields; the command lines map the fields to their options without reading the message.
The checks here are the rules that hold for every option of their kind:

* a float option is a finite number (`check_finite_fields`): no option of this project means
  anything at NaN, and none is written to take infinity (a timeout, a clip or a coefficient
  of ``inf`` is refused, with the allowed range, rather than trained on);
* a seed is an integer in ``[0, SEED_MAX]`` (`check_seed`), the range every random stream the
  project seeds accepts (numpy's ``SeedSequence`` refuses negatives; ``RandomState`` and most
  tools stop at 2³² − 1; torch's ``manual_seed`` at 2⁶⁴ − 1);
* an output directory can be created and written (`writable_dir`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

#: the largest seed any option takes: numpy's legacy range, 2³² − 1
SEED_MAX = 2**32 - 1


class ConfigError(ValueError):
    """A config field (or several fields together) out of its allowed range.

    ``fields`` names them (the dataclass field names, or ``section.name`` across sections),
    so that a command line can point at its options without reading the message.
    """

    def __init__(self, fields: str | tuple[str, ...], message: str) -> None:
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return type(self), (self.fields, str(self))


def _is_float_type(tp: Any) -> bool:
    """Whether a field's annotation holds floats: ``float``, ``float | None``, ``tuple[float, ...]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, tuple, list):
        return any(_is_float_type(a) for a in typing.get_args(tp) if a is not Ellipsis)
    return tp is float


def check_finite_fields(obj: Any) -> None:
    """`ConfigError` naming the first float field of dataclass ``obj`` that is not a finite
    number (NaN, ±inf), or a bool or non-number where a float belongs."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if not _is_float_type(hints[f.name]):
            continue
        value = getattr(obj, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if v is None or isinstance(v, str):
                continue  # Optional fields; strings are the field's own check (a Literal)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(
                    f.name, f"{type(obj).__name__}.{f.name} must be a finite number, got {value!r}"
                )


def check_seed(name: str, value: Any) -> None:
    """`ConfigError` naming ``name`` unless ``value`` is an int in ``[0, SEED_MAX]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEED_MAX:
        raise ConfigError(name, f"{name} must be an integer in [0, {SEED_MAX}], got {value!r}")


def episode_seeds_problem(first: int, episodes: int) -> str | None:
    """None if episodes seeded ``first``, ``first + 1``, ... (``episodes`` of them) all have a
    seed in ``[0, SEED_MAX]``, else the reason they do not (for the option's error message)."""
    if first + episodes - 1 > SEED_MAX:
        return (f"the episodes' seeds (from {first}, {episodes} episodes) must stay within "
                f"[0, {SEED_MAX}]")  # fmt: skip
    return None


def writable_dir(path: str | os.PathLike[str]) -> str | None:
    """Create ``path`` (and its parents) if needed; None if it is a writable directory, else
    the reason it is not (for the option's error message)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot create {str(p)!r}: {err.strerror or err}"
    if not p.is_dir():
        return f"{str(p)!r} is not a directory"
    if not os.access(p, os.W_OK | os.X_OK):
        return f"{str(p)!r} is not writable"
    return None


def ray_address_problem(address: str) -> str | None:
    """None if ``address`` is a Ray address a driver can join (``auto``, ``local``,
    ``HOST:PORT``, ``ray://HOST:PORT``), else what is wrong with it."""
    if address in ("auto", "local"):
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if (
        sep
        and host
        and port.isdigit()
        and 0 < int(port) < 65536
        and not any(c.isspace() or c in "/?#" for c in host)
    ):
        return None
    return f"expected auto, local, HOST:PORT or ray://HOST:PORT, got {address!r}"


# -- argparse types: the same rules for the options of commands without a config class --


def seed_arg(text: str) -> int:
    """An argparse ``type``: a seed in ``[0, SEED_MAX]``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: an integer") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"seed must be in [0, {SEED_MAX}], got {value}")
    return value


def int_in(lo: int, hi: int | None = None) -> typing.Callable[[str], int]:
    """An argparse ``type``: an integer in ``[lo, hi]`` (``hi`` None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def prog_name(module_form: str) -> str:
    """The command's name for its usage line: the console command that ran it (``rlmpc-train``)
    when it was one, else how it is run from a checkout (``module_form``: ``launch.py``,
    ``python -m rlmpc.enjoy``)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name.startswith("rlmpc-") else module_form
