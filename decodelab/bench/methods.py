"""Bench methods: named callables that generate for one prompt and return ids plus counters.

Built-in methods:

- `plain`: decodelab's own loop with no proposer (`dl.generate`).
- `hf`: Hugging Face `model.generate` on the same prompt ids and settings (the baseline).
- `hf-prompt-lookup`: HF prompt lookup decoding (A. Saxena, 2023, "Prompt Lookup Decoding"),
  10 tokens per lookup.
- `hf-assisted`: HF assisted generation with a draft model, i.e. speculative decoding (Y. Leviathan,
  M. Kalman, Y. Matias, 2023, "Fast Inference from Transformers via Speculative Decoding").
- `llama-cpp`: llama.cpp on the model's GGUF file (optional extra `llama-cpp`; see `llama_cpp`).

Any other name is a registered method (`decodelab methods`), run through `dl.generate` like every
other surface: speculative methods are built once by `decodelab.speculative.make(name, target=...,
draft=..., **options)` (so proposers that learn across prompts keep what they learned), the others
are selected by their keywords. A name may carry its own options after colons, e.g.
`prompt-lookup:k=4:adaptive=true` or `beam:num_beams=4`.

Every method's wall time includes prompt encoding, so all of them pay the same overheads.
Target forward passes are counted by the loop (decodelab) or by a forward hook on the model (HF).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..errors import DecodelabError, InvalidOption
from ..models.lm import LM, Message
from ..sampling.config import SamplingConfig

BUILTIN_METHODS = ("plain", "hf", "hf-prompt-lookup", "hf-assisted", "llama-cpp")
PROMPT_LOOKUP_TOKENS = 10


class UnknownBenchMethod(InvalidOption):
    """A bench method name that is neither built in nor known to `decodelab.speculative.make`."""


class BenchMethodError(InvalidOption):
    """A bench method that exists but cannot be built with the given models or options."""


@dataclass(frozen=True)
class RunSettings:
    """Settings shared by every method of a run."""

    max_new_tokens: int
    temperature: float = 0.0
    seed: int | None = None


@dataclass
class MethodRun:
    """What one method did on one prompt. Times in seconds; None where not measurable."""

    token_ids: list[int]
    wall_time: float
    prefill_time: float | None
    target_forwards: int
    draft_forwards: int | None = None
    # a draft model's own prefill when it ran after the target's (decodelab's draft methods);
    # left out of the decode time like the target's prefill. HF's assistant prefills before the
    # target's first forward ends, so its prefill is inside `prefill_time` already.
    draft_prefill_time: float | None = None
    verify_steps: int | None = None
    proposed: int | None = None
    accepted: int | None = None
    acceptance_by_position: list[int] = field(default_factory=list)
    proposed_by_position: list[int] = field(default_factory=list)

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_time(self) -> float | None:
        if self.prefill_time is None:
            return None
        return max(self.wall_time - self.prefill_time - (self.draft_prefill_time or 0.0), 0.0)

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verify step (bonus token included); for HF, per target forward."""
        steps = self.verify_steps if self.verify_steps is not None else self.target_forwards
        return self.new_tokens / steps if steps else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(new_tokens=self.new_tokens, decode_time=self.decode_time,
                   mean_accepted_length=self.mean_accepted_length)
        return out


@dataclass
class BenchMethod:
    """A named method: `method(messages, settings) -> MethodRun`.

    `lossless` says whether greedy output must equal plain decoding token for token.

    Example:
        >>> import decodelab as dl
        >>> from decodelab.bench.methods import RunSettings, make_method
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> run = make_method("plain", lm)([{"role": "user", "content": "hi"}], RunSettings(4))
        >>> run.new_tokens <= 4
        True
    """

    name: str
    run: Callable[[list[Message], RunSettings], MethodRun]
    kind: str = "decodelab"  # "decodelab", "hf" or "llama.cpp"
    lossless: bool = True
    description: str = ""

    def __call__(self, messages: list[Message], settings: RunSettings) -> MethodRun:
        return self.run(messages, settings)


class _ForwardHook:
    """Counts forward calls of a module and notes when the first one (the prefill) started and ended.

    `first_only`: the hook removes itself after the first call. decodelab's engine runs cached
    steps through its direct forward only when no module has a hook (a hook must see every call),
    so a hook left on for the whole run would time the slower path instead of the one users get.
    """

    def __init__(self, module: Any, *, first_only: bool = False):
        self.module = module
        self.calls = 0
        self.first_start: float | None = None
        self.first_end: float | None = None
        self.first_only = first_only
        self._handles: list[Any] = []

    def _pre_hook(self, module, args) -> None:
        if self.first_start is None:
            self.first_start = time.perf_counter()

    def _hook(self, module, args, output) -> None:
        self.calls += 1
        if self.first_end is None:
            self.first_end = time.perf_counter()
        if self.first_only:
            self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> _ForwardHook:
        self._handles = [self.module.register_forward_pre_hook(self._pre_hook),
                         self.module.register_forward_hook(self._hook)]
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def first_after(self, moment: float | None) -> float | None:
        """How long the first call took if it started after `moment` (else 0; None: no call)."""
        if self.first_start is None or self.first_end is None:
            return None
        return self.first_end - self.first_start if moment is not None and self.first_start >= moment else 0.0


def parse_method_options(pairs: list[str] | None) -> dict[str, Any]:
    """Turn `["k=5", "tree=true"]` into `{"k": 5, "tree": True}` (ints, floats, booleans, None, text).

    Example:
        >>> parse_method_options(["k=5", "p=0.5", "greedy=false", "name=x"])
        {'k': 5, 'p': 0.5, 'greedy': False, 'name': 'x'}
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise InvalidOption(f"method options are KEY=VALUE with KEY a name, got {pair!r}")
        out[key] = _parse_value(value.strip())
    return out


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def make_methods(names: list[str], lm: LM, *, draft: LM | None = None,
                 method_options: dict[str, Any] | None = None) -> list[BenchMethod]:
    """Build methods by name, checking all of them before any run starts."""
    if not names:
        raise InvalidOption("at least one bench method is required")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidOption(f"bench method(s) given twice: {', '.join(duplicates)}")
    return [make_method(n, lm, draft=draft, method_options=method_options) for n in names]


def make_method(name: str, lm: LM, *, draft: LM | None = None,
                method_options: dict[str, Any] | None = None) -> BenchMethod:
    """One method by name (see the module docstring for the names)."""
    if not isinstance(name, str) or not name.strip():
        raise UnknownBenchMethod("a bench method name must be a non-empty string")
    name = name.strip()
    if name == "plain":
        return BenchMethod("plain", _decodelab_runner(lm, None), description="decodelab plain decoding")
    if name == "hf":
        return BenchMethod("hf", _hf_runner(lm), kind="hf", description="Hugging Face generate")
    if name == "hf-prompt-lookup":
        return BenchMethod(name, _hf_runner(lm, prompt_lookup_num_tokens=PROMPT_LOOKUP_TOKENS), kind="hf",
                           description=f"Hugging Face prompt lookup ({PROMPT_LOOKUP_TOKENS} tokens)")
    if name == "hf-assisted":
        if draft is None:
            raise BenchMethodError("bench method 'hf-assisted' needs a draft model (--draft)")
        if draft.model is lm.model:
            raise BenchMethodError("bench method 'hf-assisted' needs a draft model other than the target")
        return BenchMethod(name, _hf_runner(lm, assistant=draft), kind="hf",
                           description=f"Hugging Face assisted generation (draft {draft.name})")
    if name == "llama-cpp":
        from .llama_cpp import llama_cpp_runner

        return BenchMethod(name, llama_cpp_runner(lm), kind="llama.cpp", lossless=False,
                           description="llama.cpp on the same GGUF file")
    # "prompt-lookup:k=4:adaptive=true" gives this method its own options on top of the shared ones
    base, _, own = name.partition(":")
    options = dict(method_options or {})
    options.update(parse_method_options([p for p in own.split(":") if p.strip()]))
    method = _registered(base.strip())
    if method is not None and method.slot != "speculative":
        kwargs = method.keywords(options)
        return BenchMethod(name, _decodelab_runner(lm, None, kwargs), lossless=method.capabilities.lossless,
                           description=f"decodelab {method.slot} '{name}'")
    speculative = _make_speculative(base.strip(), lm, draft, options)
    return BenchMethod(name, _decodelab_runner(lm, speculative), lossless=bool(getattr(speculative, "lossless", True)),
                       description=f"decodelab speculative '{name}'")


def _registered(name: str) -> Any:
    from ..decoding.method import methods

    key = name.lower()
    return next((m for m in methods() if key == m.name or key in m.aliases), None)


def _make_speculative(name: str, lm: LM, draft: LM | None, options: dict[str, Any]) -> Any:
    builtins = ", ".join(BUILTIN_METHODS)
    try:
        from .. import speculative as speculative_package

        make = speculative_package.make
    except (ImportError, AttributeError) as exc:
        raise UnknownBenchMethod(
            f"unknown bench method '{name}': built-in methods are {builtins}; other names go to "
            f"decodelab.speculative.make, which is not available ({exc})"
        ) from None
    try:
        return make(name, target=lm, draft=draft, **options)
    except (KeyError, LookupError) as exc:
        raise UnknownBenchMethod(f"unknown bench method '{name}': {exc}") from None
    except TypeError as exc:
        raise BenchMethodError(f"bench method '{name}' rejected options {options}: {exc}") from None
    except DecodelabError as exc:
        if "unknown" in str(exc).lower() and not options:
            raise UnknownBenchMethod(f"unknown bench method '{name}': {exc}") from None
        raise BenchMethodError(f"bench method '{name}': {exc}") from None


def _decodelab_runner(lm: LM, speculative: Any, method_keywords: dict[str, Any] | None = None,
                      ) -> Callable[[list[Message], RunSettings], MethodRun]:
    from ..decoding.generate import generate

    def run(messages: list[Message], settings: RunSettings) -> MethodRun:
        # The hook only times the prefill, so that "decode time" is cut at the same point as for
        # HF; forward counts come from the loop's own stats (a self-drafting method may call the
        # target model for its drafts too).
        draft = getattr(getattr(speculative, "draft", None), "model", None)
        with ExitStack() as stack:
            hook = stack.enter_context(_ForwardHook(lm.model, first_only=True))
            draft_hook = stack.enter_context(_ForwardHook(draft, first_only=True)) \
                if isinstance(draft, torch.nn.Module) and draft is not lm.model else None
            start = time.perf_counter()
            out = generate(lm, messages, max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                           seed=settings.seed, records=False, speculative=speculative,
                           **copy.deepcopy(method_keywords or {}))
            wall = time.perf_counter() - start
        stats = out.stats
        prefill = hook.first_end - start if hook.first_end is not None else stats.prefill_time
        return MethodRun(
            token_ids=list(out.token_ids), wall_time=wall, prefill_time=prefill,
            draft_prefill_time=draft_hook.first_after(hook.first_end) if draft_hook is not None else None,
            target_forwards=stats.target_forwards, draft_forwards=stats.draft_forwards,
            verify_steps=stats.verify_steps, proposed=stats.proposed, accepted=stats.accepted,
            acceptance_by_position=list(stats.acceptance_by_position),
            proposed_by_position=list(stats.proposed_by_position),
        )

    return run


def hf_generation_kwargs(lm: LM, settings: RunSettings) -> dict[str, Any]:
    """GenerationConfig fields that reproduce decodelab's sampler for these settings.

    The effective sampler is the same merge `dl.generate` does (model defaults, then the
    explicit temperature); every warper HF would otherwise default (e.g. top_k=50) is set
    explicitly so that both sides sample from the same distribution.
    """
    config = SamplingConfig.from_options(lm.generation_defaults(), temperature=settings.temperature)
    unsupported = [n for n in ("frequency_penalty", "presence_penalty", "logit_bias") if getattr(config, n)]
    if unsupported:
        raise BenchMethodError(f"HF generate has no equivalent of {', '.join(unsupported)}")
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "min_new_tokens": 0,
        "do_sample": not config.greedy,
        "eos_token_id": sorted(lm.eos_token_ids) or None,
        "pad_token_id": lm.pad_token_id,
        "repetition_penalty": float(config.repetition_penalty or 1.0),
    }
    if not config.greedy:
        kwargs.update(
            temperature=float(config.temperature),
            top_k=int(config.top_k or 0),
            top_p=float(config.top_p if config.top_p is not None else 1.0),
            min_p=config.min_p or None,
            typical_p=float(config.typical_p if config.typical_p is not None else 1.0),
            epsilon_cutoff=float(config.epsilon_cutoff or 0.0),
            eta_cutoff=float(config.eta_cutoff or 0.0),
        )
    return kwargs


def _same_vocabulary(a: LM, b: LM) -> bool:
    return len(a.tokenizer) == len(b.tokenizer) and a.shares_vocabulary(b)


def _hf_runner(lm: LM, *, prompt_lookup_num_tokens: int | None = None,
               assistant: LM | None = None) -> Callable[[list[Message], RunSettings], MethodRun]:
    from transformers import GenerationConfig

    extra: dict[str, Any] = {}
    if assistant is not None:
        extra["assistant_model"] = assistant.model
        if not _same_vocabulary(lm, assistant):
            # Different tokenizers: HF's universal assisted decoding re-tokenises the drafts.
            extra.update(tokenizer=lm.tokenizer, assistant_tokenizer=assistant.tokenizer)

    def run(messages: list[Message], settings: RunSettings) -> MethodRun:
        fields = hf_generation_kwargs(lm, settings)
        if prompt_lookup_num_tokens is not None:
            fields["prompt_lookup_num_tokens"] = prompt_lookup_num_tokens
        config = GenerationConfig(**fields)
        # HF's heuristic draft-length schedule writes back into the assistant's generation
        # config; restore it so that every prompt starts from the same state.
        saved = copy.deepcopy(assistant.model.generation_config) if assistant is not None else None
        draft_hook = _ForwardHook(assistant.model) if assistant is not None else None
        try:
            with ExitStack() as stack:
                hook = stack.enter_context(_ForwardHook(lm.model))
                if draft_hook is not None:
                    stack.enter_context(draft_hook)
                stack.enter_context(torch.random.fork_rng(devices=[]))
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
                start = time.perf_counter()
                ids = lm.encode(messages)
                inputs = torch.tensor([ids], dtype=torch.long, device=lm.device)
                output = lm.model.generate(inputs, attention_mask=torch.ones_like(inputs), generation_config=config,
                                           **extra)
                wall = time.perf_counter() - start
        finally:
            if saved is not None:
                assistant.model.generation_config = saved
        new = output[0, len(ids):].tolist()
        return MethodRun(
            token_ids=new, wall_time=wall,
            prefill_time=hook.first_end - start if hook.first_end is not None else None,
            target_forwards=hook.calls,
            draft_forwards=draft_hook.calls if draft_hook is not None else None,
            draft_prefill_time=draft_hook.first_after(hook.first_end) if draft_hook is not None else None,
        )

    return run
