"""Options defined once: a dataclass field carries type, range, default and help.

Every surface reads the same fields: Python keyword validation (`check_options`), the CLI's
flags (`decodelab.cli` derives them), the server's request fields (`decodelab.server.schemas`
derives them), `decodelab methods` and the docs. A range is written once, here, as bounds on the
field; every numeric option has a maximum, so that no request can ask for unbounded memory or time.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Lookup:
    ...     k: int = option(10, "draft tokens per step", ge=1, le=64)
    >>> check_options(Lookup, {"k": 8}, "prompt-lookup")
    Lookup(k=8)
    >>> check_options(Lookup, {"k": 0}, "prompt-lookup")
    Traceback (most recent call last):
    ...
    decodelab.errors.InvalidOption: prompt-lookup: k must be an integer in [1, 64], got 0
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from ..errors import InvalidOption
from ..text import check_nested_text, check_text, one_line

MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class OptionSpec:
    """What one option is: name, kind, bounds, choices, default and help."""

    name: str
    kind: str  # "int", "float", "bool", "str", "choice", "int_list", "dict", "any"
    help: str
    default: Any = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    required: bool = False
    optional: bool = True  # None is accepted and means "not given"
    max_length: int | None = None
    cli: bool = True  # has a CLI flag of its own
    file: bool = False  # on the CLI the flag names a file whose text is the value
    annotation: Any = dataclasses.field(default=None, compare=False, repr=False)  # the field's type

    def describe_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        low = f"[{_num(self.ge)}" if self.ge is not None else (f"({_num(self.gt)}" if self.gt is not None else None)
        high = f"{_num(self.le)}]" if self.le is not None else (f"{_num(self.lt)})" if self.lt is not None else None)
        if low is None and high is None:
            return ""
        return f"in {low or '(-inf'}, {high or 'inf)'}"

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "type": self.kind, "default": self.default, "help": self.help}
        for bound in ("ge", "gt", "le", "lt", "choices", "max_length"):
            if getattr(self, bound) is not None:
                out[bound] = list(self.choices) if bound == "choices" else getattr(self, bound)
        if self.required:
            out["required"] = True
        return out

    def check(self, value: Any, owner: str = "") -> Any:
        """The value, validated (ints accepted for floats); raises InvalidOption."""
        where = f"{owner}: " if owner else ""
        if value is None:
            if self.required:
                raise InvalidOption(f"{where}{self.name} is required", param=self.name)
            return None
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise InvalidOption(f"{where}{self.name} must be true or false, got {_short(value)}", param=self.name)
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise InvalidOption(f"{where}{self.name} must be {self.describe_range()}, got {_short(value)}", param=self.name)
            return value
        if self.kind in ("int", "float"):
            ok = isinstance(value, int) if self.kind == "int" else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok or (isinstance(value, float) and not math.isfinite(value)):
                article = "an integer" if self.kind == "int" else "a finite number"
                rng = self.describe_range()
                raise InvalidOption(f"{where}{self.name} must be {article}{' ' + rng if rng else ''}, "
                                    f"got {_short(value)}", param=self.name)
            if not self.within(value):
                article = "an integer" if self.kind == "int" else "a number"
                raise InvalidOption(f"{where}{self.name} must be {article} {self.describe_range()}, got {_short(value)}",
                                    param=self.name)
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise InvalidOption(f"{where}{self.name} must be text, got {type(value).__name__}", param=self.name)
            if self.max_length is not None and len(value) > self.max_length:
                raise InvalidOption(f"{where}{self.name} is longer than {self.max_length} characters", param=self.name)
            return check_text(value, f"{where}{self.name}", InvalidOption, param=self.name)
        if self.kind == "int_list":
            values = [value] if isinstance(value, int) else value
            if isinstance(values, str):
                try:
                    values = [int(x) for x in values.replace("x", ",").split(",")]
                except ValueError:
                    raise InvalidOption(f"{where}{self.name} must be integers like 3,2,1, got {_short(value)}", param=self.name) from None
            if not isinstance(values, (list, tuple)) or not values or any(
                    isinstance(v, bool) or not isinstance(v, int) or not self.within(v) for v in values):
                raise InvalidOption(f"{where}{self.name} must be a list of integers {self.describe_range()}, "
                                    f"got {_short(value)}", param=self.name)
            if self.max_length is not None and len(values) > self.max_length:
                raise InvalidOption(f"{where}{self.name} takes at most {self.max_length} values", param=self.name)
            return tuple(values)
        if self.kind == "dict" and not isinstance(value, dict):
            raise InvalidOption(f"{where}{self.name} must be a mapping, got {type(value).__name__}", param=self.name)
        if isinstance(value, str) and self.max_length is not None and len(value) > self.max_length:
            raise InvalidOption(f"{where}{self.name} is longer than {self.max_length} characters", param=self.name)
        return check_nested_text(value, f"{where}{self.name}") if isinstance(value, (str, dict, list, tuple)) else value

    def within(self, value: float) -> bool:
        return not ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                    or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))


def _short(value: Any) -> str:
    """A value for an error message: at most 60 characters (a 5000-digit integer is not a message)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**60:
        return f"an integer of about {len(str(abs(value))) if abs(value) < 10**4000 else 'over 4000'} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def option(default: Any = None, help: str = "", *, ge: float | None = None, gt: float | None = None,
           le: float | None = None, lt: float | None = None, choices: tuple | None = None,
           required: bool = False, max_length: int | None = None, cli: bool = True, file: bool = False) -> Any:
    """A dataclass field that is an option: its bounds and help travel with it to every surface."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "required": required,
            "max_length": max_length, "cli": cli, "file": file}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"option": meta})
    return dataclasses.field(default=default, metadata={"option": meta})


def _kind(annotation: Any) -> tuple[str, tuple | None, bool]:
    """(kind, choices, optional) of a type annotation."""
    if isinstance(annotation, str):
        annotation = eval(annotation, {**vars(typing), "Literal": Literal}, {})  # noqa: S307 - our own annotations
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    optional = False
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        if len(rest) == 1:
            kind, choices, _ = _kind(rest[0])
            return kind, choices, optional
        if all(typing.get_origin(a) in (tuple, list) or a is int for a in rest):
            return "int_list", None, optional
        return "any", None, optional
    if origin is Literal:
        return "choice", tuple(args), optional
    if origin in (tuple, list):
        return "int_list", None, optional
    if origin is dict or annotation is dict:
        return "dict", None, optional
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(annotation, "any"), None, optional


def option_specs(cls: type) -> list[OptionSpec]:
    """The options of a dataclass, in field order."""
    return list(_option_specs(cls))


@functools.cache
def _option_specs(cls: type) -> tuple[OptionSpec, ...]:
    specs = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = dict(f.metadata.get("option", {}))
        kind, choices, optional = _kind(hints[f.name])
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        specs.append(OptionSpec(name=f.name, kind=kind, help=meta.pop("help", ""), default=default,
                                choices=meta.pop("choices", None) or choices, optional=optional,
                                annotation=hints[f.name], **meta))
    return tuple(specs)


def check_options(cls: type, values: dict[str, Any], owner: str) -> Any:
    """An instance of the options dataclass `cls` from keyword values, every value checked.

    Unknown names are an error that lists the known ones; None means "not given" (the default)."""
    specs = {s.name: s for s in option_specs(cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise InvalidOption(f"{owner}: unknown option(s) {', '.join(unknown)}; known: {', '.join(specs) or 'none'}",
                            param=unknown[0], code="unknown_option")
    checked = {}
    for name, spec in specs.items():
        value = values.get(name)
        if value is None:
            if spec.required:
                raise InvalidOption(f"{owner}: {name} is required", param=name, code="missing_field")
            continue
        checked[name] = spec.check(value, owner)
    return cls(**checked)


def parse_cli_value(text: str) -> Any:
    """'5' -> 5, '0.5' -> 0.5, 'true' -> True, '3,2,1' -> (3, 2, 1), otherwise the text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if "," in text:
        try:
            return tuple(int(x) for x in text.split(","))
        except ValueError:
            return text
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors (its subcommands' too) are one line naming the help, with exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def bounded_number(kind: type, low: float, high: float, what: str) -> Any:
    """An argparse `type`: a number of `kind` in [low, high] (NaN and overflow refused), so that
    command-line flags that are not method options are bounded too.

    Example:
        >>> bounded_number(int, 0, 65535, "a port")("8000")
        8000
    """
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not low <= value <= high:  # NaN fails the comparison too
            article = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{what} is {article} in [{_num(low)}, {_num(high)}], got {text!r}")
        return value

    return parse


def add_flags(group: Any, specs: list[OptionSpec]) -> None:
    """argparse flags from option specs: the same name (dashes for underscores), type, range and help
    as in Python and the server. Booleans get --name / --no-name; file options take a path."""
    for spec in specs:
        flag = "--" + spec.name.replace("_", "-")
        text = spec.help + (f" ({spec.describe_range()})" if spec.describe_range() else "")
        if spec.kind == "bool":
            group.add_argument(flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif spec.file:
            group.add_argument(flag, dest=spec.name, default=None, metavar="FILE", help=text)
        elif spec.kind == "choice":
            group.add_argument(flag, dest=spec.name, default=None, choices=spec.choices, help=text)
        else:
            kind = {"int": int, "float": float, "str": str}.get(spec.kind, parse_cli_value)
            group.add_argument(flag, dest=spec.name, type=kind, default=None, help=text)
