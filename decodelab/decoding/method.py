"""Methods as plug-ins: what a family registers, and the one place where methods are combined.

A `Method` is a name, the paper it implements, its options as one dataclass (see `options`),
its capabilities, and `build(ctx, options) -> Parts`: the pieces the loop takes (proposer,
verifier, constraint, prompt hook, observers, row policy, results). Families register their
methods at import (`register(Method(...))`); the core never imports a family.

A method sits in a *slot*, which says how a request selects it:

- nested slots (`speculative`, `watermark`, `strategy`): the request names the method
  (`speculative="prompt-lookup"`, `watermark={"scheme": "exp", ...}`) and its options go in a
  mapping (`speculative_options={"k": 8}`, the rest of the watermark mapping);
- flat slots (`constraint`, `policy`): the options are top-level keywords (`regex=`,
  `particles=`, `num_beams=`), and each method says from them whether it is selected.

Combination rules are data: each method lists the slots it composes with, and `compose` checks
every pair in one place.

Example:
    >>> import decodelab as dl
    >>> [m.name for m in methods("policy")][:1]
    ['beam']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InvalidOption
from ..sampling.options import OptionSpec, check_options, option_specs

if TYPE_CHECKING:
    from ..models.lm import LM
    from ..sampling.config import SamplingConfig


@dataclass(frozen=True)
class Slot:
    """How requests select the methods of one kind.

    `selector`: the keyword naming the method (nested slots), `options_keyword`: the keyword
    holding its options (None: the options sit inside the selector's mapping, as for watermarks),
    `flat`: options are top-level keywords, `default`: the method a mapping selects when it names
    none, `from_object`: turns a non-name value (a proposer object, ...) into Parts.
    """

    name: str
    help: str
    selector: str | None = None
    options_keyword: str | None = None
    name_key: str | None = None  # in a mapping selector: the key that names the method
    default: str | None = None
    flat: bool = False
    requires: str = ""  # flat slots: what selects a method of this slot (said when an option is given alone)
    requires_code: str = "missing_method"  # the error code then
    from_object: Callable[[Any, BuildContext], Parts] | None = None


@dataclass
class Capabilities:
    """What a method promises, and what it may be combined with: slot names, or "*" for a method
    that combines with every other (an observer)."""

    lossless: bool = True
    lossy: bool = False  # a lossy accelerator (decodelab.lossy): trades exactness for speed, flags its tokens
    exact_law: bool = False  # assumes the output follows the model's own law (watermarks): refuses lossy methods
    needs_sampling: bool = False
    batchable: bool = True  # rows of different requests may share its run (the server batches them)
    composes_with: frozenset[str] = frozenset()
    streams: bool = True  # text reaches the client token by token (False: whole when done)


@dataclass
class Parts:
    """What a method gives the loop; any may be None."""

    proposer: Any = None
    verifier: Any = None
    constraint: Any = None
    prompt_hook: Callable[[LM, list[list[int]]], tuple[list[list[int]], list[str]]] | None = None
    observers: list[Any] = field(default_factory=list)
    row_policy: Any = None
    results: Callable[[Any, int, Any], None] | None = None  # (state, row index, output) -> None


@dataclass
class BuildContext:
    """What `build` may read: the target model, the sampler settings, how many prompts, and the
    models a request may name (the server's served models; None: any model `load` can find)."""

    lm: LM
    config: SamplingConfig
    prompts: int
    models: dict[str, LM] | None = None

    def model(self, value: Any, option: str) -> LM:
        """A model-valued option: an `LM`, or a name (a served model on the server)."""
        from ..models import load
        from ..models.lm import LM

        if isinstance(value, LM):
            return value
        if self.models is not None:
            if not isinstance(value, str) or value not in self.models:
                raise InvalidOption(f"{option}={value!r} must name a served model ({', '.join(self.models)})")
            return self.models[value]
        if not isinstance(value, str):
            raise InvalidOption(f"{option} must be a model from decodelab.load() or a model name")
        return load(value)


@dataclass
class Method:
    """A registered method. `selects(values)` (flat slots) says whether the given flat options
    pick this method; `build(ctx, options)` returns its Parts.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class NoOptions:
        ...     pass
        >>> m = Method("my-method", "speculative", "demo", "", NoOptions, lambda ctx, o: Parts())
        >>> m.option_names()
        []
    """

    name: str
    slot: str
    summary: str
    paper: str
    options: type
    build: Callable[[BuildContext, Any], Parts]
    capabilities: Capabilities = field(default_factory=Capabilities)
    selects: Callable[[dict[str, Any]], bool] | None = None
    aliases: tuple[str, ...] = ()
    # options of a minimal request that selects this method on a tiny-random model (docs, conformance
    # tests); an option named "draft" stands for a draft model the caller supplies
    example: dict[str, Any] = field(default_factory=dict)
    # row policies: rows each prompt runs as (from the checked options), and the option that sets it
    rows_per_prompt: Callable[[Any], int] = lambda options: 1
    rows_option: str | None = None

    def option_specs(self) -> list[OptionSpec]:
        return option_specs(self.options)

    def option_names(self) -> list[str]:
        return [s.name for s in self.option_specs()]

    def check(self, values: dict[str, Any]) -> Any:
        return check_options(self.options, values, self.name)

    def keywords(self, options: dict[str, Any]) -> dict[str, Any]:
        """The `dl.generate` keywords that select this method with these options (the same
        names the CLI and the server use).

        Example:
            >>> import decodelab as dl
            >>> get_method("speculative", "prompt-lookup").keywords({"k": 4})
            {'speculative': 'prompt-lookup', 'speculative_options': {'k': 4}}
        """
        s = _SLOTS[self.slot]
        if s.flat:
            return dict(options)
        if s.name_key is not None:
            return {s.selector: {s.name_key: self.name, **options}}
        return {s.selector: self.name, s.options_keyword: dict(options)}

    def describe(self) -> dict[str, Any]:
        caps = self.capabilities
        return {"name": self.name, "slot": self.slot, "summary": self.summary, "paper": self.paper,
                "aliases": list(self.aliases), "example": self.keywords(self.example), "lossless": caps.lossless, "lossy": caps.lossy,
                "needs_sampling": caps.needs_sampling,
                "batchable": caps.batchable, "composes_with": sorted(caps.composes_with),
                "options": [s.as_dict() for s in self.option_specs()]}


_SLOTS: dict[str, Slot] = {}
_METHODS: dict[str, Method] = {}


def register_slot(slot: Slot) -> Slot:
    """Declare a slot (idempotent for an equal declaration)."""
    known = _SLOTS.get(slot.name)
    if known is not None and known != slot:
        raise ValueError(f"slot {slot.name!r} is already declared differently")
    _SLOTS[slot.name] = slot
    return slot


def register(method: Method) -> Method:
    """Add a method to the registry; it appears in Python, the CLI, the server, the bench and
    `decodelab methods`. Flat options shared by several methods must be declared alike."""
    if method.slot not in _SLOTS:
        raise ValueError(f"method {method.name!r}: unknown slot {method.slot!r}")
    slot = _SLOTS[method.slot]
    if slot.flat and method.selects is None:
        raise ValueError(f"method {method.name!r} sits in a flat slot and needs selects=")
    if slot.flat:
        known = {s.name: s for s in flat_option_specs()}
        for spec in method.option_specs():
            if spec.name in known and known[spec.name] != spec:
                raise ValueError(f"method {method.name!r}: flat option {spec.name!r} is declared differently "
                                 "by another method")
    _METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests that define one clean up with this)."""
    _METHODS.pop(name, None)


def slots() -> list[Slot]:
    return list(_SLOTS.values())


def slot(name: str) -> Slot:
    return _SLOTS[name]


def methods(slot_name: str | None = None) -> list[Method]:
    """Registered methods (of one slot), in registration order."""
    return [m for m in _METHODS.values() if slot_name is None or m.slot == slot_name]


def get_method(slot_name: str, name: Any) -> Method:
    """The method of a slot by name or alias; InvalidOption lists the known ones."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidOption(f"a {slot_name} method name must be non-empty text, got {name!r}")
    key = name.strip().lower()
    for m in methods(slot_name):
        if key == m.name or key in m.aliases:
            return m
    known = ", ".join(m.name for m in methods(slot_name))
    raise InvalidOption(f"unknown {slot_name} method '{name}'; known: {known}")


def flat_option_specs() -> list[OptionSpec]:
    """Every top-level option that some flat-slot method declares (each name once)."""
    out: dict[str, OptionSpec] = {}
    for m in _METHODS.values():
        if _SLOTS[m.slot].flat:
            for spec in m.option_specs():
                out.setdefault(spec.name, spec)
    return list(out.values())


def selector_keywords() -> list[str]:
    """Keywords that select a nested method or carry its options (speculative, watermark, ...)."""
    out = []
    for s in _SLOTS.values():
        out += [k for k in (s.selector, s.options_keyword) if k]
    return out


@dataclass
class Selected:
    """One method chosen for a request, with its checked options (or an object given directly)."""

    method: Method | None
    options: Any
    parts: Parts | None = None  # prebuilt (an object passed directly)
    name: str = ""
    slot: str = ""

    @property
    def capabilities(self) -> Capabilities:
        return self.method.capabilities if self.method is not None else Capabilities(composes_with=frozenset(
            s.name for s in slots()))


def select_methods(ctx: BuildContext, kwargs: dict[str, Any]) -> list[Selected]:
    """Pop the method keywords out of `kwargs` and return the chosen methods, checked."""
    chosen: list[Selected] = []
    for s in slots():
        if s.flat:
            continue
        value = kwargs.pop(s.selector, None)
        extra = kwargs.pop(s.options_keyword, None) if s.options_keyword else None
        if value is None:
            if extra:
                raise InvalidOption(f"{s.options_keyword} given without {s.selector}")
            continue
        if isinstance(value, dict) and s.name_key is not None:
            values = dict(value)
            name = values.pop(s.name_key, None) or s.default
            method = get_method(s.name, name)
            chosen.append(Selected(method, method.check(values), name=method.name, slot=s.name))
            continue
        if isinstance(value, str):
            method = get_method(s.name, value)
            if extra is not None and not isinstance(extra, dict):
                raise InvalidOption(f"{s.options_keyword} must be a mapping of option names to values")
            chosen.append(Selected(method, method.check(dict(extra or {})), name=method.name, slot=s.name))
            continue
        if s.from_object is None:
            raise InvalidOption(f"{s.selector} must be a method name")
        if extra:
            raise InvalidOption(f"{s.options_keyword} applies to a method given by name")
        chosen.append(Selected(None, value, parts=s.from_object(value, ctx), name=s.selector, slot=s.name))
    flat = {spec.name: spec for spec in flat_option_specs()}
    # checked before any method's `selects` looks at them (num_beams="x" is a typed error, not a TypeError)
    given = {k: flat[k].check(kwargs.pop(k)) for k in list(kwargs) if k in flat}
    used: set[str] = set()
    for m in methods():
        if not _SLOTS[m.slot].flat:
            continue
        values = {k: v for k, v in given.items() if k in m.option_names()}
        if m.selects(values):
            chosen.append(Selected(m, m.check(values), name=m.name, slot=m.slot))
            used |= set(values)
    # an option left at its default (num_beams=1) asks for nothing
    unused = sorted(k for k, v in given.items() if k not in used and v not in (None, False, flat[k].default))
    if unused:
        hints = sorted({_SLOTS[m.slot].requires for m in methods()
                        if _SLOTS[m.slot].flat and set(unused) & set(m.option_names()) and _SLOTS[m.slot].requires})
        codes = sorted({_SLOTS[m.slot].requires_code for m in methods()
                        if _SLOTS[m.slot].flat and set(unused) & set(m.option_names())})
        raise InvalidOption(f"{', '.join(unused)} need(s) {' or '.join(hints) or 'a method that uses them'} "
                            "(see `decodelab methods`)", param=unused[0], code=codes[0] if codes else None)
    return chosen


def check_combination(chosen: list[Selected], config: SamplingConfig) -> None:
    """The combination rules, in one place: every pair must compose, each slot holds one method,
    and methods that need sampling get a temperature > 0."""
    seen: dict[str, Selected] = {}
    for item in chosen:
        if item.slot in seen:
            raise InvalidOption(f"{seen[item.slot].name} and {item.name} cannot be combined (both are "
                                f"{item.slot} methods)")
        seen[item.slot] = item
    for i, a in enumerate(chosen):
        for b in chosen[i + 1:]:
            _check_exact_law(a, b)
            _check_exact_law(b, a)
            if not (_accepts(a, b) and _accepts(b, a)):
                raise InvalidOption(f"{a.name} and {b.name} cannot be combined")
        if a.capabilities.needs_sampling and config.greedy:
            raise InvalidOption(f"{a.name} needs sampling: give a temperature > 0")


def _check_exact_law(a: Selected, b: Selected) -> None:
    """A method that assumes the model's exact law (a watermark) refuses a lossy one beside it: the
    lossy method's shift of the law would be hidden inside the other's guarantee."""
    if a.capabilities.lossy and b.capabilities.exact_law:
        raise InvalidOption(f"{a.name} is lossy (it moves the output away from the model's distribution) and "
                            f"{b.name} assumes the model's exact law; they cannot be combined", code="lossy_combination")


def _accepts(a: Selected, b: Selected) -> bool:
    """Whether method a takes method b beside it: a lists b's slot, or either is universal ("*",
    observers that only add record columns)."""
    ours, theirs = a.capabilities.composes_with, b.capabilities.composes_with
    return b.slot in ours or "*" in ours or "*" in theirs


def build_parts(ctx: BuildContext, chosen: list[Selected]) -> Parts:
    """Build every chosen method and merge the Parts (each single piece from one method)."""
    merged = Parts()
    owner: dict[str, str] = {}
    for item in chosen:
        parts = item.parts if item.parts is not None else item.method.build(ctx, item.options)
        for piece in ("proposer", "verifier", "constraint", "prompt_hook", "row_policy"):
            value = getattr(parts, piece)
            if value is None:
                continue
            if getattr(merged, piece) is not None:
                raise InvalidOption(f"{owner[piece]} and {item.name} cannot be combined (both set the {piece})")
            setattr(merged, piece, value)
            owner[piece] = item.name
        merged.observers += parts.observers
        if parts.results is not None:
            previous = merged.results
            merged.results = parts.results if previous is None else _chain(previous, parts.results)
    return merged


def _chain(first: Callable, second: Callable) -> Callable:
    def both(state: Any, row: int, out: Any) -> None:
        first(state, row, out)
        second(state, row, out)

    return both
