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
            records: bool = True, **sampler: Any) -> tuple[DecodeState, bool]:
    """Validate options and build the decode state; returns (state, is_batch)."""
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
    `speculative=` takes a method (dl.spec.PromptLookup(), ...) or its name; `watermark=` takes
    {"key": ..., "scheme": "exp"|"its"|"kgw", "n", "shift", "gamma", "delta"} (see decodelab.watermark).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", max_new_tokens=5, temperature=0)
        >>> len(out.token_ids) <= 5
        True
    """
    state, batch = prepare(lm, prompt, **options)
    _attach_constraint(state, constraint)
    proposer, verifier = _method(speculative, lm, watermark, state)
    for _ in run_loop(state, proposer, verifier):
        pass
    outputs = [_output(lm, row) for row in state.rows]
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
    state, _ = prepare(lm, prompt, **options)
    _attach_constraint(state, constraint)
    proposer, verifier = _method(speculative, lm, watermark, state)
    for events in run_loop(state, proposer, verifier):
        yield from events
    return [_output(lm, row) for row in state.rows]


def _output(lm: LM, row) -> GenerationOutput:
    return GenerationOutput(
        text=row.text.text,
        token_ids=row.output_ids,
        records=row.records,
        stats=row.stats,
        finish_reason=row.finish_reason or "length",
        prompt_token_ids=row.prompt_ids,
    )
