"""`generate` and `stream`: the public entry points of decoding."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InvalidOption, InvalidPrompt, PromptTooLong
from ..models.lm import LM, Prompt
from ..sampling.config import SamplingConfig
from .detokenize import validate_stop
from .loop import DecodeState, run_loop
from .records import GenerationOutput

DEFAULT_MAX_NEW_TOKENS = 256

SAMPLER_OPTIONS = SamplingConfig.option_names()


def is_batch(prompt: Any) -> bool:
    """A list of prompts (strings, message lists or id lists) rather than one prompt."""
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return False
    first = prompt[0]
    return isinstance(first, str) or (isinstance(first, (list, tuple)))


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidOption(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def prepare(lm: LM, prompt: Prompt | list[Prompt], *, max_new_tokens: int | None = None,
            seed: int | None = None, stop: Any = None, chat: bool | None = None, top_logprobs: int = 5,
            records: bool = True, prompt_hook: Any = None, **sampler: Any) -> tuple[DecodeState, bool]:
    """Validate options and build the decode state; returns (state, is_batch).

    `prompt_hook(lm, encoded)` may rewrite the encoded prompts (token healing backs up tokens)."""
    unknown = sorted(set(sampler) - set(SAMPLER_OPTIONS))
    if unknown:
        raise InvalidOption(f"unknown option(s): {', '.join(unknown)}")
    if not isinstance(lm, LM):
        raise InvalidOption("the first argument must be a model from decodelab.load()")
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("top_logprobs", top_logprobs, 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidOption(f"seed must be an integer, got {seed!r}")
    config = SamplingConfig.from_options(lm.generation_defaults(), **sampler)
    config.check_vocab(lm.vocab_size)
    stops = validate_stop(stop)
    batch = is_batch(prompt)
    prompts = list(prompt) if batch else [prompt]
    if not prompts:
        raise InvalidPrompt("the prompt is empty")
    encoded = [lm.encode(p, chat=chat) for p in prompts]
    if prompt_hook is not None:
        encoded = prompt_hook(lm, encoded)
    for ids in encoded:
        if len(ids) >= lm.context_length:
            raise PromptTooLong(
                f"the prompt has {len(ids)} tokens; the model's context is {lm.context_length} tokens"
            )
    state = DecodeState(lm, encoded, config, seed=seed, max_new_tokens=max_new_tokens, stop=stops,
                        top_logprobs=min(top_logprobs, lm.vocab_size), records=records)
    return state, batch


def _method(speculative: Any, lm: LM, watermark: dict | None = None, state: DecodeState | None = None):
    """(proposer, verifier) for the loop: speculative decoding, a watermark, or plain decoding."""
    if watermark is not None:
        if speculative is not None:
            raise InvalidOption("watermark and speculative cannot be combined")
        if not isinstance(watermark, dict):
            raise InvalidOption("watermark must be a dict with at least a 'key'")
        from ..watermark.schemes import verifier_for

        return None, verifier_for(watermark, state)
    if speculative is None:
        return None, None
    from ..speculative.resolve import resolve_speculative

    return resolve_speculative(speculative, lm)


def _attach_constraint(state: DecodeState, constraint: Any) -> None:
    if constraint is None:
        return
    if not all(hasattr(constraint, m) for m in ("start", "allowed", "advance", "select_rows")):
        raise InvalidOption("constraint must implement decodelab.decoding.protocols.Constraint")
    state.constraint = constraint


def generate(lm: LM, prompt: Prompt | list[Prompt], *, speculative: Any = None, watermark: dict | None = None,
             constraint: Any = None, **options: Any) -> GenerationOutput | list[GenerationOutput]:
    """Generate a continuation of a prompt (or of each prompt in a list).

    Options: max_new_tokens, seed, stop, chat, top_logprobs, records, and every sampler option
    (temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff,
    repetition_penalty, frequency_penalty, presence_penalty, logit_bias).
    `constraint=` takes a `Constraint` (token masks, see decodelab.decoding.protocols).
    Grammars: `regex=`, `json_schema=` (dict or JSON text) or `grammar=` (Lark), with
    `constraint_method="mask"|"awrs"|"smc"`, `particles=`, `ess_threshold=`, `token_healing=`
    (see decodelab.constrain); constrained outputs set `constraint_satisfied`, and AWRS/SMC
    also `log_weight` / `log_marginal_likelihood` / `particles`.
    `speculative=` takes a method (dl.spec.PromptLookup(), ...) or its name; `watermark=` takes
    {"key": ..., "scheme": "exp"|"its"|"kgw", "n", "shift", "gamma", "delta"} (see decodelab.watermark).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", max_new_tokens=5, temperature=0)
        >>> len(out.token_ids) <= 5
        True
    """
    request = _constraint_request(lm, options, constraint, speculative, watermark)
    state, batch = prepare(lm, prompt, prompt_hook=request.heal if request else None, **options)
    if request is not None and request.method == "smc":
        outputs = _run_smc(state, request)
        return outputs if batch else outputs[0]
    proposer, verifier = _constrained_method(state, request, constraint, speculative, watermark)
    for _ in run_loop(state, proposer, verifier):
        pass
    outputs = [row_output(lm, row, request, i) for i, row in enumerate(state.rows)]
    return outputs if batch else outputs[0]


def stream(lm: LM, prompt: Prompt, *, speculative: Any = None, watermark: dict | None = None,
           constraint: Any = None, **options: Any) -> Iterator[str]:
    """Yield the text of one prompt's continuation piece by piece (never a broken character).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> text = "".join(dl.stream(lm, "hello", max_new_tokens=5, temperature=0))
    """
    if is_batch(prompt):
        raise InvalidPrompt("stream() takes one prompt; use generate() for a batch")
    for event in stream_events(lm, prompt, speculative=speculative, watermark=watermark, constraint=constraint,
                               **options):
        if event.text:
            yield event.text


def stream_events(lm: LM, prompt: Prompt | list[Prompt], *, speculative: Any = None,
                  watermark: dict | None = None, constraint: Any = None, **options: Any):
    """Yield `StepEvent`s (row, token ids, text, finished) as they happen; the final
    `GenerationOutput`s are available as the generator's return value."""
    from .loop import StepEvent

    request = _constraint_request(lm, options, constraint, speculative, watermark)
    state, _ = prepare(lm, prompt, prompt_hook=request.heal if request else None, **options)
    if request is not None and request.method == "smc":
        outputs = _run_smc(state, request)
        for i, out in enumerate(outputs):
            yield StepEvent(i, out.token_ids, out.text, True)
        return outputs
    proposer, verifier = _constrained_method(state, request, constraint, speculative, watermark)
    # token healing: the backed-up prompt text comes out again first; do not show it twice
    skip = list(request.prefixes) if request is not None else [""] * len(state.rows)
    for events in run_loop(state, proposer, verifier):
        for event in events:
            if skip[event.row] and event.text:
                cut = len(skip[event.row]) if event.text.startswith(skip[event.row]) else 0
                cut = cut or len(_common_prefix(event.text, skip[event.row]))
                skip[event.row] = skip[event.row][cut:]
                event = StepEvent(event.row, event.token_ids, event.text[cut:], event.finished)
            yield event
    return [row_output(lm, row, request, i) for i, row in enumerate(state.rows)]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _constraint_request(lm: LM, options: dict, constraint: Any, speculative: Any, watermark: Any):
    """Parse regex/json_schema/grammar options (None when there are none)."""
    from ..constrain.api import CONSTRAINT_OPTIONS, constraint_request

    if not any(options.get(name) not in (None, False) for name in CONSTRAINT_OPTIONS):
        for name in CONSTRAINT_OPTIONS:
            options.pop(name, None)
        return None
    request = constraint_request(lm, options)
    if request is None:
        return None
    if constraint is not None:
        raise InvalidOption("give either constraint= or regex=/json_schema=/grammar=, not both")
    if watermark is not None:
        raise InvalidOption("watermark and grammar constraints cannot be combined")
    if speculative is not None and request.method != "mask":
        raise InvalidOption(f"constraint_method={request.method!r} samples token by token; "
                            "use constraint_method='mask' with speculative decoding")
    return request


def _constrained_method(state: DecodeState, request: Any, constraint: Any, speculative: Any, watermark: Any):
    """Attach the constraint and pick (proposer, verifier)."""
    if request is not None:
        constraint = request.make_constraint()
    _attach_constraint(state, constraint)
    if request is not None and request.method == "awrs":
        from ..constrain.awrs import AWRSVerifier

        return None, AWRSVerifier(constraint)
    return _method(speculative, state.lm, watermark, state)


def _run_smc(state: DecodeState, request: Any) -> list[GenerationOutput]:
    from ..constrain.smc import run_smc, smc_output

    if state.config.greedy:
        raise InvalidOption("constraint_method='smc' samples: give a temperature > 0")
    if state.rows[0].text is not None and state.rows[0].text.stop:
        raise InvalidOption("stop strings are not supported with constraint_method='smc'")
    outputs = []
    for i, (row, grammar) in enumerate(zip(state.rows, request.grammars())):
        result = run_smc(state.lm, row.prompt_ids, grammar, particles=request.particles,
                         max_new_tokens=state.max_new_tokens, config=state.config, generator=state.generators[i],
                         ess_threshold=request.ess_threshold, records=state.keep_records)
        out = smc_output(state.lm, row.prompt_ids, result, state.generators[i])
        _strip_prefix(out, request.prefixes[i])
        outputs.append(out)
    return outputs


def _strip_prefix(out: GenerationOutput, prefix: str) -> None:
    if prefix and out.text.startswith(prefix):
        out.text = out.text[len(prefix):]


def row_output(lm: LM, row, request: Any = None, index: int = 0) -> GenerationOutput:
    """The `GenerationOutput` of one loop row, with constraint fields when a grammar was used."""
    out = GenerationOutput(
        text=row.text.text,
        token_ids=row.output_ids,
        records=row.records,
        stats=row.stats,
        finish_reason=row.finish_reason or "length",
        prompt_token_ids=row.prompt_ids,
    )
    if request is None or request.constraint is None:
        return out
    c = request.constraint
    out.constraint_satisfied = bool(c.satisfied.get(index, False)) and index not in c.failed
    out.stats.constraint_checks = c.checks.get(index, 0)
    out.stats.constraint_time = c.seconds.get(index, 0.0)
    if request.method == "awrs":
        out.log_weight = c.log_weight.get(index, 0.0)
    if index in c.failed:
        out.finish_reason = "constraint"
        if request.method == "awrs" and out.token_ids and out.token_ids[-1] in lm.eos_token_ids:
            # AWRS found no allowed token: the placeholder EOS is not part of the output
            out.token_ids = out.token_ids[:-1]
            out.records = out.records[:len(out.token_ids)]
            out.log_weight = float("-inf")
    _strip_prefix(out, request.prefixes[index])
    return out
