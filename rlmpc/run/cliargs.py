"""A command line generated from frozen config dataclasses (one per component).

Each dataclass field becomes ``--field-name`` with its default and its docstring (the string
literal written right below the field, as CleanRL/tyro do) as help. Values are parsed to the
field's type; the dataclass validates itself in ``__post_init__`` and the CLI turns its
``ValueError`` into an argparse error naming the options of the fields it names
(``err.fields``), before any work starts.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (empty when source is missing)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(element type, is_sequence) for int/float/str/bool, Optional[...] and tuple[T, ...]."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (tuple, list):
        args = typing.get_args(tp)
        return (args[0] if args else str), True
    if origin is typing.Literal:
        return type(typing.get_args(tp)[0]), False
    return tp, False


def value_problem(tp: Any, value: Any) -> str | None:
    """What is wrong with ``value`` as a value of a field annotated ``tp`` when it comes from a
    file rather than through the field's option (YAML gives ints, floats, strings, bools,
    lists, None): None when its type fits, else what the field takes. A number written as a
    string fits a number (YAML reads ``3e-4`` as one; the option's type converts it, as it
    does on the command line). Values are the class's own check; this checks their type."""
    if typing.get_origin(tp) is typing.Literal:
        return None if value in typing.get_args(tp) else f"one of {list(typing.get_args(tp))}"
    base, seq = _base_type(tp)
    optional = typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(tp)
    )
    if value is None:
        return None if optional else "a value (not null)"
    if seq:
        if not isinstance(value, (list, tuple)) or any(value_problem(base, v) for v in value):
            return f"a list of {base.__name__} values"
        return None
    fits = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: (isinstance(v, int) and not isinstance(v, bool)) or _parses(int, v),
        float: lambda v: (
            (isinstance(v, (int, float)) and not isinstance(v, bool)) or _parses(float, v)
        ),
        str: lambda v: isinstance(v, str),
    }.get(base, lambda v: True)
    return None if fits(value) else {int: "an int"}.get(base, f"a {base.__name__}")


def _parses(kind: type, value: Any) -> bool:
    """Whether ``value`` is a string that ``kind`` (the option's argparse type) reads."""
    if not isinstance(value, str):
        return False
    try:
        kind(value)
    except ValueError:
        return False
    return True


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    defaults: dict[str, Any] | None = None,
    skip: tuple[str, ...] = (),
    prefix: str = "",
    choices: dict[str, list[Any]] | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """Add one option per field of ``cls`` in an argument group; ``defaults`` override its own.

    ``prefix`` scopes the flags (``prefix="influence-ratio-"`` gives ``--influence-ratio-lam``);
    ``choices`` gives fields their allowed values (a ``Literal`` field has its own); ``notes``
    adds to a field's help.
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group = parser.add_argument_group(title, (cls.__doc__ or "").strip().split("\n")[0])
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        if f.name in defaults:
            default = defaults[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        tp, seq = _base_type(hints[f.name])
        help_text = " ".join(filter(None, (docs.get(f.name, ""), (notes or {}).get(f.name))))
        kwargs: dict[str, Any] = {"default": default, "help": help_text}
        literal = typing.get_origin(hints[f.name]) is typing.Literal
        if literal:
            kwargs["choices"] = list(typing.get_args(hints[f.name]))
        elif choices and f.name in choices:
            kwargs["choices"], literal = list(choices[f.name]), True
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp if tp in (int, float, str) else str
            if seq:
                kwargs["nargs"] = "*"
            kwargs["metavar"] = (
                "{" + ",".join(map(str, kwargs["choices"])) + "}"
                if literal
                else tp.__name__.upper()
            )
        group.add_argument(flag(prefix + f.name), dest=f"{cls.__name__}.{f.name}", **kwargs)


def build_dataclass(cls: type, ns: argparse.Namespace, **fixed: Any) -> Any:
    """Instantiate ``cls`` from the parsed namespace (validation happens in the class)."""
    values = dict(fixed)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{cls.__name__}.{f.name}"
        if f.name in fixed or not hasattr(ns, key):
            continue
        value = getattr(ns, key)
        if isinstance(value, list):
            value = tuple(value)
        if value is None and typing.get_origin(hints[f.name]) not in (
            typing.Union,
            types.UnionType,
        ):
            continue
        values[f.name] = value
    return cls(**values)
