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

from dataclasses import dataclass
from typing import Any, Literal

from ..decoding.method import BuildContext, Capabilities, Method, Parts, Slot, register, register_slot
from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import option
from .grammar import InvalidConstraint, compile_grammar
from .mask import GrammarConstraint

DEFAULT_PARTICLES = 8  # SMC particles when constraint_method='smc' is asked without particles=
MAX_PARTICLES = 4096
MAX_CONSTRAINT_CHARS = 100_000  # a regex, grammar or schema text: bounds compile time
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
class ConstraintOptions:
    """The grammar options, shared by the three constraint methods (top-level keywords)."""

    regex: str | None = option(None, "the output must fully match this regular expression",
                               max_length=MAX_CONSTRAINT_CHARS)
    json_schema: dict[str, Any] | str | None = option(None, "the output must be JSON valid under this schema (a mapping or JSON text; "
                                    "CLI: a file)", file=True)
    grammar: str | None = option(None, "the output must match this Lark grammar (CLI: a file)",
                                 max_length=MAX_CONSTRAINT_CHARS, file=True)
    constraint_method: Literal["mask", "awrs", "smc"] | None = option(
        None, "mask (default), awrs (rejection sampling with weights) or smc (particles; default when particles "
              "is given)")
    particles: int | None = option(None, "SMC particles (implies constraint_method smc; default 8)", ge=1,
                                   le=MAX_PARTICLES)
    ess_threshold: float | None = option(None, "SMC: resample when the effective sample size < this x particles "
                                               "(default 0.5)", ge=0, le=1)
    token_healing: bool | None = option(None, "back up the last prompt token; the output starts with its text")


SOURCES = ("regex", "json_schema", "grammar")


def chosen_method(values: dict[str, Any]) -> str | None:
    """The constraint method the options select (None: no grammar given): the rule "smc when
    particles are given" lives here only."""
    if not any(values.get(k) is not None for k in SOURCES):
        return None
    return values.get("constraint_method") or ("smc" if values.get("particles") is not None else "mask")


def _selects(name: str):
    return lambda values: chosen_method(values) == name


def _grammar_parts(ctx: BuildContext, o: ConstraintOptions, method: str) -> tuple[Parts, GrammarConstraint]:
    given = {k: getattr(o, k) for k in SOURCES if getattr(o, k) is not None}
    if len(given) > 1:
        raise InvalidConstraint(f"give one of regex, json_schema or grammar, not {' and '.join(given)}",
                                param=next(iter(given)), code="conflicting_options")
    for name in ("particles", "ess_threshold"):
        if getattr(o, name) is not None and method != "smc":
            raise InvalidOption(f"{name}= applies to constraint_method='smc'", param=name, code="conflicting_options")
    grammar = compile_grammar(ctx.lm, **given)
    constraint = GrammarConstraint([grammar] * ctx.prompts)

    def heal(lm: LM, prompts: list[list[int]]) -> tuple[list[list[int]], list[str]]:
        healed = [heal_prompt(lm, ids) for ids in prompts] if o.token_healing else [(ids, "") for ids in prompts]
        constraint.grammars = [grammar.healed(text) for _, text in healed]
        return [ids for ids, _ in healed], [text for _, text in healed]

    def results(state: Any, i: int, out: Any) -> None:
        c = constraint
        out.constraint_satisfied = bool(c.satisfied.get(i, False)) and i not in c.failed
        out.stats.constraint_checks = c.checks.get(i, 0)
        out.stats.constraint_time = c.seconds.get(i, 0.0)
        if method != "mask":
            out.log_weight = c.log_weight.get(i, 0.0)
        if i in c.failed:
            out.finish_reason = "constraint"
            if method != "mask" and out.token_ids and out.token_ids[-1] in state.lm.eos_token_ids:
                # AWRS found no allowed token: the placeholder EOS is not part of the output
                out.token_ids = out.token_ids[:-1]
                out.records = out.records[:len(out.token_ids)]
                out.log_weight = float("-inf")

    return Parts(constraint=constraint, prompt_hook=heal, results=results), constraint


def _build_mask(ctx: BuildContext, o: ConstraintOptions) -> Parts:
    return _grammar_parts(ctx, o, "mask")[0]


def _build_awrs(ctx: BuildContext, o: ConstraintOptions) -> Parts:
    from .awrs import AWRSVerifier

    parts, constraint = _grammar_parts(ctx, o, "awrs")
    parts.verifier = AWRSVerifier(constraint)
    return parts


def _build_smc(ctx: BuildContext, o: ConstraintOptions) -> Parts:
    from .awrs import AWRSVerifier
    from .smc import SMCPolicy

    parts, constraint = _grammar_parts(ctx, o, "smc")
    parts.verifier = AWRSVerifier(constraint)
    parts.row_policy = SMCPolicy(constraint, particles=o.particles or DEFAULT_PARTICLES,
                                 ess_threshold=0.5 if o.ess_threshold is None else o.ess_threshold)
    return parts


register_slot(Slot("constraint", "constrained generation: the output must match a grammar", flat=True,
                   requires="regex=, json_schema= or grammar=", requires_code="missing_constraint"))
PAPER_AWRS = ("Lipkin et al. 2025, Fast Controlled Generation from Language Models with Adaptive Weighted "
              "Rejection Sampling")
CONSTRAINT_METHODS = [
    Method("mask", "constraint", "mask the tokens the grammar forbids, then sample (works with speculative methods)",
           "Willard & Louf 2023, Efficient Guided Generation for Large Language Models", ConstraintOptions,
           _build_mask, Capabilities(lossless=True, composes_with=frozenset({"speculative", "policy", "strategy"})),
           _selects("mask"), example={"regex": "(ea|to)+"}),
    Method("awrs", "constraint", "adaptive weighted rejection sampling: same law, lazy checks, importance weights",
           PAPER_AWRS, ConstraintOptions, _build_awrs, Capabilities(lossless=True), _selects("awrs"),
           example={"regex": "(ea|to)+", "constraint_method": "awrs"}),
    Method("smc", "constraint", "sequential Monte Carlo over AWRS particles: approaches p(x | x in L)",
           PAPER_AWRS + "; Loula et al. 2025, Syntactic and Semantic Control of LLMs via SMC", ConstraintOptions,
           _build_smc, Capabilities(lossless=False, needs_sampling=True, streams=False), _selects("smc"),
           example={"regex": "(ea|to)+", "particles": 4}, rows_option="particles",
           rows_per_prompt=lambda o: o.particles or DEFAULT_PARTICLES),
]
for _method in CONSTRAINT_METHODS:
    register(_method)
