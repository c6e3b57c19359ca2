"""`generate`, `stream` and the one compose-and-run path every surface uses.

`compose(lm, prompt, **options)` checks every option, selects the registered methods the
options name (see `method`), checks that they combine, builds their parts and the decode state,
and returns a `Run`. `dl.generate`, `dl.stream`, the CLI, the server and the bench all go
through it, so a method registered by a family works on every surface without other edits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

from ..errors import InvalidOption, InvalidPrompt, PromptTooLong
from ..models.lm import LM, Prompt
from ..sampling.config import SamplingConfig
from ..sampling.keyed import row_generators
from ..sampling.options import check_options, option
from .detokenize import validate_stop
from .loop import DecodeState, StepEvent, run_loop
from .method import BuildContext, Parts, Selected, build_parts, check_combination, select_methods
from .records import GenerationOutput

DEFAULT_MAX_NEW_TOKENS = 256
MAX_NEW_TOKENS = 32768  # bounds one request's time and KV memory
MAX_BATCH_ROWS = 16384  # prompts x rows per prompt in one call (bounds KV memory)


@dataclass
class GenerationOptions:
    """Options of every generation, whatever the method."""

    max_new_tokens: int | None = option(None, "tokens to generate at most (default 256)", ge=1, le=MAX_NEW_TOKENS)
    seed: int | None = option(None, "seed for reproducible sampling (row i of a batch draws stream (seed, i))",
                              ge=-(2**63), le=2**63 - 1)
    stop: Any = option(None, "stop string or list of up to 8 stop strings", cli=False)
    chat: bool | None = option(None, "apply the model's chat template to a text prompt (default: chat models do)",
                               cli=False)
    top_logprobs: int = option(5, "alternatives per token in the records", ge=0, le=20, cli=False)
    records: bool = option(True, "keep per-token records", cli=False)


GENERATION_OPTIONS = tuple(f.name for f in fields(GenerationOptions))
SAMPLER_OPTIONS = SamplingConfig.option_names()


def is_batch(prompt: Any) -> bool:
    """A list of prompts (strings, message lists or id lists) rather than one prompt."""
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return False
    first = prompt[0]
    return isinstance(first, str) or (isinstance(first, (list, tuple)))


class Run:
    """One composed request: the decode state, the methods' parts, and how rows become outputs.

    `events()` runs the loop and yields each step's `StepEvent`s, indexed by *output* (prompt)
    and carrying their new records; `outputs()` returns one `GenerationOutput` per prompt.
    """

    def __init__(self, state: DecodeState, parts: Parts, chosen: list[Selected], batch: bool,
                 prefixes: list[str]):
        self.state = state
        self.parts = parts
        self.chosen = chosen
        self.batch = batch
        self.prefixes = prefixes  # per prompt: text the prompt hook backed up (generated again, not shown)
        self._skip = list(prefixes)
        self.policy = parts.row_policy
        self.streams = self.policy is None or getattr(self.policy, "streams", True)
        self._outputs: list[GenerationOutput] | None = None

    @property
    def lm(self) -> LM:
        return self.state.lm

    @property
    def methods(self) -> list[str]:
        return [c.name for c in self.chosen]

    @property
    def prompts(self) -> int:
        return len(self.prefixes)

    def events(self) -> Iterator[list[StepEvent]]:
        for events in run_loop(self.state, self.parts.proposer, self.parts.verifier):
            if self.streams:
                yield [self._unheal(self._with_records(e)) for e in events]
        if not self.streams:
            yield [StepEvent(i, list(out.token_ids), out.text, True, list(out.records), out)
                   for i, out in enumerate(self.outputs())]

    @property
    def joinable(self) -> bool:
        """Whether new prompts may join this run while it runs (plain decoding: no method keeps
        per-row state that joining rows would need)."""
        p = self.parts
        return (p.proposer is None and p.verifier is None and p.constraint is None and p.row_policy is None
                and p.prompt_hook is None and not p.observers and self.state.active != [])

    def join(self, prompts: list[list[int]], row_seeds: list[tuple[int | None, int]]) -> list[int]:
        """Add prompts (token ids, two or more each) to the running batch (continuous batching);
        each draws the random stream it would have drawn alone. Returns their output indices."""
        if not self.joinable:
            raise InvalidOption("only plain decoding runs take new prompts while running")
        generators = [g for seed, count in row_seeds for g in row_generators(seed, count)]
        if len(generators) != len(prompts):
            raise ValueError("row_seeds must cover the joining prompts")
        for ids in prompts:
            self.state.seq.check_room(len(ids))
        added = self.state.add_rows(prompts, generators)
        self.prefixes += [""] * len(prompts)
        self._skip += [""] * len(prompts)
        return added

    def finish(self, output: int, reason: str) -> None:
        """End an output early (client gone, time limit): its rows stop at the next step."""
        for i in self.state.active:
            if self.state.groups[i] == output and self.state.rows[i].finish_reason is None:
                self.state.rows[i].finish_reason = reason

    def flush(self, output: int) -> str:
        """The text of an output not yet released (its rows were ended early)."""
        if not self.streams:
            return self.output(output).text
        event = StepEvent(output, [], self.state.rows[output].text.flush(), True)
        return self._unheal(event).text

    def output(self, index: int) -> GenerationOutput:
        """The output of one prompt as it stands (complete once its rows finished)."""
        return self.outputs()[index] if not self.streams else self._row_output(index)

    def outputs(self) -> list[GenerationOutput]:
        if self._outputs is not None:
            return self._outputs
        rows = [self._row_output(i) for i in range(len(self.state.rows))]
        if self.policy is not None and hasattr(self.policy, "outputs"):
            rows = self.policy.outputs(self.state, rows)
            for i, out in enumerate(rows):
                _strip_prefix(out, self.prefixes[i])
        if not self.state.active:
            self._outputs = rows
        return rows

    def _row_output(self, i: int) -> GenerationOutput:
        row = self.state.rows[i]
        out = GenerationOutput(text=row.text.text, token_ids=list(row.output_ids), records=list(row.records),
                               stats=row.stats, finish_reason=row.finish_reason or "length",
                               prompt_token_ids=row.prompt_ids)
        if self.parts.results is not None:
            self.parts.results(self.state, i, out)
        if self.policy is None:
            _strip_prefix(out, self.prefixes[self.state.groups[i]])
        return out

    def _with_records(self, event: StepEvent) -> StepEvent:
        row = self.state.rows[event.row]
        count = len(event.token_ids)
        event.records = row.records[-count:] if count and self.state.keep_records else []
        if event.finished:
            out = self._row_output(event.row)
            event.output = out
            # a method may drop trailing tokens from the output (AWRS's placeholder EOS)
            extra = len(row.output_ids) - len(out.token_ids)
            if extra > 0:
                event.records = event.records[:max(0, len(event.records) - extra)]
        return event

    def _unheal(self, event: StepEvent) -> StepEvent:
        """Token healing: the backed-up prompt text comes out again first; do not show it twice."""
        skip = self._skip[event.row]
        if skip and event.text:
            cut = 0
            while cut < min(len(skip), len(event.text)) and skip[cut] == event.text[cut]:
                cut += 1
            self._skip[event.row] = skip[cut:] if cut else ""
            event.text = event.text[cut:]
        return event


def choose_methods(lm: LM, options: dict[str, Any], *, prompts: int = 1, models: dict[str, LM] | None = None,
                   extra: list[Selected] = ()) -> tuple[SamplingConfig, list[Selected]]:
    """The sampler settings and the methods that sampler and method `options` select, checked
    together with `extra` (methods given as objects); every option must be used. Compose calls
    this, and so does the server before a request queues."""
    options = dict(options)
    sampler = {k: options.pop(k) for k in list(options) if k in SAMPLER_OPTIONS}
    config = SamplingConfig.from_options(lm.generation_defaults(), **sampler)
    config.check_vocab(lm.vocab_size)
    chosen = select_methods(BuildContext(lm, config, prompts, models), options) + list(extra)
    if options:
        unknown = sorted(options)
        raise InvalidOption(f"unknown option(s): {', '.join(unknown)}", param=unknown[0], code="unknown_option")
    check_combination(chosen, config)
    return config, chosen


def encode_prompts(lm: LM, prompts: list[Prompt], *, chat: bool | None, batch: bool) -> list[list[int]]:
    """Token ids of each prompt; an error in one prompt of a batch names it (counting from 0)."""
    encoded = []
    for i, p in enumerate(prompts):
        try:
            encoded.append(lm.encode(p, chat=chat))
        except InvalidPrompt as exc:
            if not batch:
                raise
            raise type(exc)(f"prompt {i} of the batch: {exc}") from None
    return encoded


def compose(lm: LM, prompt: Prompt | list[Prompt], *, models: dict[str, LM] | None = None,
            row_seeds: list[tuple[int | None, int]] | None = None, constraint: Any = None,
            max_rows: int = MAX_BATCH_ROWS, **options: Any) -> Run:
    """Check the options, select and build the methods, encode the prompts: a `Run`.

    `models`: the models that model-valued options may name (the server's served models).
    `row_seeds`: [(seed, prompts)] groups of consecutive prompts with their own seed (the server
    batches requests; each row draws the stream it would have drawn alone). `max_rows`: at most
    this many rows (prompts x rows per prompt).
    """
    if not isinstance(lm, LM):
        raise InvalidOption("the first argument must be a model from decodelab.load()")
    core = {k: options.pop(k) for k in list(options) if k in GENERATION_OPTIONS}
    general = check_options(GenerationOptions, core, "generate")
    stops = validate_stop(general.stop)
    batch = is_batch(prompt)
    prompts = list(prompt) if batch else [prompt]
    if not prompts:
        raise InvalidPrompt("the prompt is empty")
    if constraint is not None and not all(hasattr(constraint, m) for m in ("start", "allowed", "advance",
                                                                           "select_rows")):
        raise InvalidOption("constraint must implement decodelab.decoding.protocols.Constraint")
    extra = [] if constraint is None else [Selected(None, constraint, parts=Parts(constraint=constraint),
                                                    name="constraint", slot="constraint")]
    config, chosen = choose_methods(lm, options, prompts=len(prompts), models=models, extra=extra)
    encoded = encode_prompts(lm, prompts, chat=general.chat, batch=batch)
    ctx = BuildContext(lm, config, len(prompts), models)
    parts = build_parts(ctx, chosen)
    prefixes = [""] * len(encoded)
    if parts.prompt_hook is not None:
        encoded, prefixes = parts.prompt_hook(lm, encoded)
    for i, ids in enumerate(encoded):
        if len(ids) >= lm.context_length:
            where = f"prompt {i} of the batch" if batch else "the prompt"
            raise PromptTooLong(f"{where} has {len(ids)} tokens; the model's context is {lm.context_length} tokens")
    copies = int(getattr(parts.row_policy, "rows_per_prompt", 1) or 1)
    if len(encoded) * copies > min(max_rows, MAX_BATCH_ROWS):
        raise InvalidOption(f"{len(encoded)} prompts x {copies} rows each is more than "
                            f"{min(max_rows, MAX_BATCH_ROWS)} rows")
    groups = [p for p in range(len(encoded)) for _ in range(copies)]
    seeds = row_seeds if row_seeds is not None else [(general.seed, len(encoded))]
    generators = [g for seed, count in seeds for g in row_generators(seed, count * copies)]
    max_new = DEFAULT_MAX_NEW_TOKENS if general.max_new_tokens is None else general.max_new_tokens
    state = DecodeState(lm, [encoded[g] for g in groups], config, seed=None, max_new_tokens=max_new, stop=stops,
                        top_logprobs=min(general.top_logprobs, lm.vocab_size), records=general.records,
                        generators=generators, groups=groups)
    state.constraint = parts.constraint
    state.observers = list(parts.observers)
    state.policy = parts.row_policy
    return Run(state, parts, chosen, batch, prefixes)


def generate(lm: LM, prompt: Prompt | list[Prompt], **options: Any) -> GenerationOutput | list[GenerationOutput]:
    """Generate a continuation of a prompt (or of each prompt in a list).

    Options: max_new_tokens, seed, stop, chat, top_logprobs, records; every sampler option
    (temperature, top_k, top_p, min_p, typical_p, epsilon_cutoff, eta_cutoff, repetition_penalty,
    frequency_penalty, presence_penalty, logit_bias); and the options of the registered methods
    (`decodelab methods` lists them): `speculative=` (a name, with `speculative_options={...}`,
    or a proposer such as dl.spec.PromptLookup()), `watermark={"key": ..., "scheme": ...}`,
    grammars `regex=` / `json_schema=` / `grammar=` with `constraint_method=`, `particles=`, ...,
    row policies `num_beams=`, `best_of=`; `constraint=` takes a `Constraint` object.
    Per-method results are in `out.results[method name]`.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", max_new_tokens=5, temperature=0)
        >>> len(out.token_ids) <= 5
        True
    """
    run = compose(lm, prompt, **options)
    for _ in run.events():
        pass
    outputs = run.outputs()
    return outputs if run.batch else outputs[0]


def stream(lm: LM, prompt: Prompt, **options: Any) -> Iterator[str]:
    """Yield the text of one prompt's continuation piece by piece (never a broken character).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> text = "".join(dl.stream(lm, "hello", max_new_tokens=5, temperature=0))
    """
    if is_batch(prompt):
        raise InvalidPrompt("stream() takes one prompt; use generate() for a batch")
    for event in stream_events(lm, prompt, **options):
        if event.text:
            yield event.text


def stream_events(lm: LM, prompt: Prompt | list[Prompt], **options: Any):
    """Yield `StepEvent`s (output index, token ids, text, finished, records) as they happen; the
    final `GenerationOutput`s are the generator's return value."""
    run = compose(lm, prompt, **options)
    for events in run.events():
        yield from events
    return run.outputs()


def _strip_prefix(out: GenerationOutput, prefix: str) -> None:
    if prefix and out.text.startswith(prefix):
        out.text = out.text[len(prefix):]


__all__ = ["generate", "stream", "stream_events", "compose", "Run", "GenerationOptions", "is_batch",
           "DEFAULT_MAX_NEW_TOKENS"]
