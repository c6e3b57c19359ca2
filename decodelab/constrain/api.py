"""The constrained-generation options of `generate` / `stream`, the CLI and the server.

    regex=, json_schema= (dict or JSON text), grammar= (Lark text)      -- at most one
    constraint_method="mask" | "awrs" | "smc"                           -- default "mask",
                                                                           "smc" when particles= is given
    particles=N (SMC), ess_threshold=0.5 (SMC resampling), token_healing=False

Token healing (Lundberg, 2023, "The Art of Prompt Design: Prompt Boundaries and Token
Healing"): a prompt that ends mid-word ends on a token the model would rarely have chosen
there, and a constraint that starts at that boundary inherits the bias. With
`token_healing=True` the last prompt token is backed up and the output is constrained to
start with its text, followed by the constraint's language; the backed-up text is removed
from `out.text` again (it stays in `out.token_ids`, whose first token may carry it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOption
from ..models.lm import LM
from .grammar import Grammar, compile_grammar
from .mask import GrammarConstraint

DEFAULT_PARTICLES = 8  # SMC particles when constraint_method='smc' is asked without particles=
CONSTRAINT_OPTIONS = ("regex", "json_schema", "grammar", "constraint_method", "particles", "ess_threshold",
                      "token_healing")
METHODS = ("mask", "awrs", "smc")


def heal_prompt(lm: LM, ids: list[int]) -> tuple[list[int], str]:
    """Back up the last prompt token when it is plain text: (shorter ids, its text)."""
    if len(ids) < 2:
        return ids, ""
    last = int(ids[-1])
    special = set(getattr(lm.tokenizer, "all_special_ids", [])) | set(lm.eos_token_ids)
    if last in special:
        return ids, ""
    text = lm.tokenizer.decode([last], skip_special_tokens=False)
    if not text or "\ufffd" in text:  # part of a multi-byte character: leave it alone
        return ids, ""
    return ids[:-1], text


@dataclass
class ConstraintRequest:
    """Parsed constraint options for one call, and the objects they create."""

    grammar: Grammar
    method: str = "mask"
    particles: int = 1
    ess_threshold: float = 0.5
    token_healing: bool = False
    prefixes: list[str] = field(default_factory=list)
    constraint: GrammarConstraint | None = None

    def heal(self, lm: LM, prompts: list[list[int]]) -> list[list[int]]:
        """Prompt hook for `prepare`: back up the boundary token of each row if asked."""
        if not self.token_healing:
            self.prefixes = [""] * len(prompts)
            return prompts
        healed = [heal_prompt(lm, ids) for ids in prompts]
        self.prefixes = [text for _, text in healed]
        return [ids for ids, _ in healed]

    def grammars(self) -> list[Grammar]:
        return [self.grammar.healed(p) for p in self.prefixes]

    def make_constraint(self) -> GrammarConstraint:
        self.constraint = GrammarConstraint(self.grammars())
        return self.constraint


def constraint_request(lm: LM, options: dict[str, Any]) -> ConstraintRequest | None:
    """Pop the constraint options out of `options`; None when no constraint is asked for."""
    values = {name: options.pop(name) for name in CONSTRAINT_OPTIONS if name in options}
    given = {k: values.get(k) for k in ("regex", "json_schema", "grammar") if values.get(k) is not None}
    method = values.get("constraint_method")
    particles = values.get("particles")
    if not given:
        extra = [k for k, v in values.items() if v not in (None, False)]
        if extra:
            raise InvalidOption(f"{', '.join(sorted(extra))} need(s) regex=, json_schema= or grammar=")
        return None
    if particles is not None and (isinstance(particles, bool) or not isinstance(particles, int) or particles < 1):
        raise InvalidOption(f"particles must be an integer >= 1, got {particles!r}")
    if method is None:
        method = "smc" if particles is not None else "mask"
    if method not in METHODS:
        raise InvalidOption(f"constraint_method must be one of {', '.join(METHODS)}, got {method!r}")
    if particles is not None and method != "smc":
        raise InvalidOption("particles= applies to constraint_method='smc'")
    ess = values.get("ess_threshold")
    ess = 0.5 if ess is None else ess
    if isinstance(ess, bool) or not isinstance(ess, (int, float)) or not 0 <= ess <= 1:
        raise InvalidOption(f"ess_threshold must be in [0, 1], got {ess!r}")
    healing = values.get("token_healing") or False
    if not isinstance(healing, bool):
        raise InvalidOption(f"token_healing must be true or false, got {healing!r}")
    grammar = compile_grammar(lm, **given)
    return ConstraintRequest(grammar, method, particles or (DEFAULT_PARTICLES if method == "smc" else 1), float(ess), healing)


# --------------------------------------------------------------------------- CLI
def add_constraint_flags(parser: Any) -> None:
    """`--regex`, `--json-schema FILE`, `--grammar FILE`, `--constraint-method`, `--particles`,
    `--ess-threshold`, `--token-healing` for `decodelab generate` / `chat`."""
    group = parser.add_argument_group("constrained generation")
    group.add_argument("--regex", default=None, help="the output must match this regular expression")
    group.add_argument("--json-schema", default=None, metavar="FILE", help="the output must be JSON valid under this schema file")
    group.add_argument("--grammar", default=None, metavar="FILE", help="the output must match this Lark grammar file")
    group.add_argument("--constraint-method", default=None, choices=METHODS,
                       help="mask (default), awrs (rejection sampling with weights) or smc (particles)")
    group.add_argument("--particles", type=int, default=None, help="SMC particles (implies --constraint-method smc)")
    group.add_argument("--ess-threshold", type=float, default=None, help="SMC: resample when ESS < this x particles")
    group.add_argument("--token-healing", action="store_true", default=None,
                       help="back up the last prompt token; the output starts with its text")


def constraint_options_from_args(args: Any) -> dict[str, Any]:
    """The constraint options of parsed CLI flags (files read here; a bad path is an InvalidOption)."""
    out: dict[str, Any] = {}
    for flag, name in (("json_schema", "--json-schema"), ("grammar", "--grammar")):
        path = getattr(args, flag, None)
        if path is not None:
            try:
                with open(path, encoding="utf-8") as handle:
                    out[flag] = handle.read()
            except OSError as exc:
                raise InvalidOption(f"{name}: cannot read {path}: {exc.strerror}") from None
    for name in ("regex", "constraint_method", "particles", "ess_threshold", "token_healing"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out
