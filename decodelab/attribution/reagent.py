"""ReAGent: replace-based importance of prompt tokens for every generated token, batched.

Zhao & Shan (2024), "ReAGent: A Model-agnostic Feature Attribution Method for Generative Language
Models" (AAAI ReLM workshop). For a target token y_t after context x: start from importance
logits s; repeatedly replace a random fraction `ratio` of the context tokens, measure the drop
Delta = p(y_t | x) - p(y_t | x'), and add logit(1/2 + Delta/2) to the logits of replaced tokens and
logit(1/2 - Delta/2) to the kept ones; stop when keeping only the `keep_top_n` most important tokens
(replacing the rest) still ranks y_t among the model's top `stop_top_k`; importance = softmax(s).

What is different here, and why it is faster than a per-target loop (inseq's `reagent`):
- Only prompt tokens are replaced (the issue's question: which prompt tokens mattered), and the
  generated tokens are teacher-forced after them. So one forward of a replaced prompt followed by
  the whole output gives p(y_t | x', y_<t) for *every* t at once: each probe serves all targets,
  and the probes of a step are one padded batch (`probes` rows). A per-target implementation
  runs T times as many forwards, each over a growing context.
- Replacement tokens are drawn uniformly from the non-special vocabulary (the paper also uses a
  masked LM or POS-matched tokens; inseq's uniform sampler is the comparable choice).
- s starts at 0 (the reference starts from uniform noise, which only breaks ties).
- Besides the softmax importance, `effect[t][i]` is the difference of mean Delta between probes
  that replaced token i and probes that kept it, with its standard error: zero in expectation for
  a token the model cannot see, so it can be tested.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> a = dl.attribute(lm, [1, 5, 6, 7, 8], [9, 10], max_steps=4, probes=8)
    >>> len(a.importance), len(a.importance[0])
    (2, 5)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..decoding.generate import generate
from ..engine.full_forward import full_logits
from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from ..sampling.options import check_options, option
from ..uncertainty.score import encode_completion

MAX_PROBES = 256
MAX_STEPS = 1000


@dataclass
class ReagentOptions:
    """Options of `dl.attribute` (also the CLI's `decodelab attribute` flags)."""

    ratio: float = option(0.3, "fraction of prompt tokens replaced per probe", gt=0, lt=1)
    probes: int = option(16, "replaced prompts per step (one batched forward)", ge=1, le=MAX_PROBES)
    max_steps: int = option(50, "update steps at most", ge=1, le=MAX_STEPS)
    min_steps: int = option(3, "update steps before the stopping check runs", ge=1, le=MAX_STEPS)
    keep_top_n: int = option(5, "stopping check: keep this many most important prompt tokens", ge=1, le=4096)
    stop_top_k: int = option(3, "stopping check: the target must be among this many top predictions", ge=1, le=1000)
    attribution_seed: int = option(0, "seed of the replacements", ge=0, le=2**63 - 1)
    batch_rows: int = option(64, "rows per forward (bounds memory)", ge=1, le=4096)


@dataclass
class Attribution:
    """Importance of each prompt token (columns) for each generated token (rows)."""

    prompt_token_ids: list[int]
    prompt_tokens: list[str]
    output_token_ids: list[int]
    output_tokens: list[str]
    importance: list[list[float]]  # [T][n]: ReAGent's softmax importance (0 at positions not attributed)
    effect: list[list[float]]  # [T][n]: mean Delta when replaced minus when kept
    effect_se: list[list[float]]
    positions: list[int]  # attributed prompt positions (special tokens are not replaced)
    steps: list[int]  # update steps each target took
    forwards: int = 0
    seconds: float = 0.0
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def prompt_importance(self) -> list[float]:
        """Per prompt token: mean importance over the generated tokens."""
        if not self.importance:
            return [0.0] * len(self.prompt_token_ids)
        return torch.tensor(self.importance).mean(0).tolist()

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("prompt_token_ids", "prompt_tokens", "output_token_ids",
                                              "output_tokens", "importance", "effect", "effect_se", "positions",
                                              "steps", "forwards", "seconds", "text")} | {
            "prompt_importance": self.prompt_importance()}


def replacement_pool(lm: LM) -> torch.Tensor:
    """Token ids a replacement may take: the tokenizer's non-special tokens inside the logits."""
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or []) | set(lm.eos_token_ids)
    count = min(len(lm.tokenizer), lm.vocab_size)
    keep = torch.ones(count, dtype=torch.bool)
    keep[[t for t in special if t < count]] = False
    return keep.nonzero().flatten()


class _Probe:
    """Forwards replaced prompts + the output; returns p(y_t | x', y_<t) [rows, T]."""

    def __init__(self, lm: LM, output: list[int], batch_rows: int, loop: bool):
        self.lm, self.output, self.batch_rows, self.loop = lm, output, batch_rows, loop
        self.target = torch.tensor(output, device=lm.device)
        self.forwards = 0

    def target_probs(self, prompts: torch.Tensor) -> torch.Tensor:
        if self.loop:
            return self._looped(prompts)
        out = []
        keep = len(self.output) + 1
        for chunk in prompts.split(self.batch_rows):
            rows = torch.cat([chunk, self.target[None].expand(len(chunk), -1)], 1).tolist()
            logits, _ = full_logits(self.lm, rows, keep)
            self.forwards += 1
            probs = logits[:, :-1].softmax(-1)
            out.append(probs.gather(-1, self.target[None, :, None].expand(len(chunk), -1, 1)).squeeze(-1))
        return torch.cat(out)

    def _looped(self, prompts: torch.Tensor) -> torch.Tensor:
        """The straightforward way (the speed baseline): one forward per replaced prompt and target."""
        out = torch.zeros(len(prompts), len(self.output), device=self.lm.device)
        for m, row in enumerate(prompts.tolist()):
            for t in range(len(self.output)):
                logits, _ = full_logits(self.lm, [row + self.output[:t]], 1)
                self.forwards += 1
                out[m, t] = logits[0, -1].softmax(-1)[self.output[t]]
        return out


def _update(delta: torch.Tensor, replaced: torch.Tensor) -> torch.Tensor:
    """Sum over probes of ReAGent's logit update: [M, T] drops, [M, n] masks -> [T, n]."""
    sign = replaced.float() * 2 - 1  # +1 replaced, -1 kept
    step = (0.5 + sign[:, None, :] * delta[:, :, None] / 2).clamp(1e-6, 1 - 1e-6)
    return torch.logit(step).sum(0)


def _top_rank(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rank (0 = top) of each target token in its row of logits."""
    return (logits > logits.gather(-1, target[:, None])).sum(-1)


def reagent(lm: LM, prompt_ids: list[int], output_ids: list[int], options: ReagentOptions, *,
            loop: bool = False, positions: list[int] | None = None) -> Attribution:
    """ReAGent over prompt tokens for every output token (see the module docstring). `loop=True`
    runs the same probes one forward per (probe, target): the baseline the batched way is timed
    against; it returns the same numbers. `positions`: the prompt positions to attribute
    (default: every non-special token)."""
    start = time.perf_counter()
    n, T = len(prompt_ids), len(output_ids)
    device = lm.device
    pool = replacement_pool(lm).to(device)
    special = set(getattr(lm.tokenizer, "all_special_ids", []) or [])
    if positions is None:
        positions = [i for i, t in enumerate(prompt_ids) if t not in special]
    elif any(not 0 <= i < n for i in positions):
        raise InvalidOption(f"positions must lie in the prompt (0..{n - 1})")
    if not positions:
        raise InvalidOption("the prompt has no token that can be replaced (only special tokens)")
    where = torch.tensor(positions, device=device)
    generator = torch.Generator(device="cpu").manual_seed(options.attribution_seed)
    prompt = torch.tensor(prompt_ids, device=device)
    probe = _Probe(lm, output_ids, options.batch_rows, loop)
    original = probe.target_probs(prompt[None])[0]  # [T]
    scores = torch.zeros(T, len(positions), device=device)
    sums = {k: torch.zeros(T, len(positions), device=device) for k in ("rep", "rep2", "keep", "keep2")}
    counts = {k: torch.zeros(len(positions), device=device) for k in ("rep", "keep")}
    active = torch.ones(T, dtype=torch.bool, device=device)
    steps = torch.zeros(T, dtype=torch.long)
    for step in range(options.max_steps):
        replaced = torch.rand(options.probes, len(positions), generator=generator).to(device) < options.ratio
        tokens = pool[torch.randint(len(pool), (options.probes, len(positions)), generator=generator).to(device)]
        prompts = prompt[None].repeat(options.probes, 1)
        prompts[:, where] = torch.where(replaced, tokens, prompts[:, where])
        delta = original[None] - probe.target_probs(prompts)  # [M, T]
        scores += _update(delta, replaced) * active[:, None]
        r = replaced.float()
        sums["rep"] += delta.T @ r
        sums["rep2"] += (delta**2).T @ r
        sums["keep"] += delta.T @ (1 - r)
        sums["keep2"] += (delta**2).T @ (1 - r)
        counts["rep"] += r.sum(0)
        counts["keep"] += (1 - r).sum(0)
        steps += active.cpu().long()
        if step + 1 >= options.min_steps:
            active &= ~_stopped(lm, probe, prompt, where, scores, pool, generator, options)
            if not bool(active.any()):
                break
    importance = torch.zeros(T, n, device=device)
    importance[:, where] = scores.softmax(-1)
    effect, se = _effect(sums, counts)
    full_effect, full_se = torch.zeros(T, n, device=device), torch.zeros(T, n, device=device)
    full_effect[:, where], full_se[:, where] = effect, se
    return Attribution(prompt_ids, [lm.token_text(t) for t in prompt_ids], output_ids,
                       [lm.token_text(t) for t in output_ids], importance.tolist(), full_effect.tolist(),
                       full_se.tolist(), positions, steps.tolist(), probe.forwards, time.perf_counter() - start,
                       lm.decode(output_ids))


def _stopped(lm: LM, probe: _Probe, prompt: torch.Tensor, where: torch.Tensor, scores: torch.Tensor,
             pool: torch.Tensor, generator: torch.Generator, options: ReagentOptions) -> torch.Tensor:
    """Per target: keeping only its top-n prompt tokens still ranks it among the top k."""
    T = scores.shape[0]
    keep = scores.topk(min(options.keep_top_n, scores.shape[1]), -1).indices  # [T, n_keep]
    kept = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, keep, True)
    tokens = pool[torch.randint(len(pool), tuple(scores.shape), generator=generator).to(scores.device)]
    prompts = prompt[None].repeat(T, 1)
    prompts[:, where] = torch.where(kept, prompts[:, where], tokens)
    out = probe.output
    rows = torch.cat([prompts, torch.tensor(out, device=prompt.device)[None].expand(T, -1)], 1).tolist()
    ranks = []
    size = 1 if probe.loop else options.batch_rows
    for start in range(0, T, size):
        chunk = rows[start:start + size]
        logits, _ = full_logits(lm, chunk, len(out) + 1)
        probe.forwards += 1
        t = torch.arange(start, start + len(chunk), device=logits.device)
        ranks.append(_top_rank(logits[torch.arange(len(chunk)), t], probe.target[t]))
    return torch.cat(ranks) < options.stop_top_k


def _effect(sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Difference of mean Delta (replaced - kept) per (target, token), with its standard error."""
    out, var = [], []
    for k in ("rep", "keep"):
        c = counts[k].clamp(min=1)[None]
        m = sums[k] / c
        v = (sums[k + "2"] / c - m**2).clamp(min=0) * c / (c - 1).clamp(min=1)
        out.append(m)
        var.append(v / c)
    return out[0] - out[1], (var[0] + var[1]).sqrt()


def attribute(lm: LM, prompt: Prompt, output: str | list[int] | None = None, *, chat: bool | None = None,
              loop: bool = False, positions: list[int] | None = None, **options: Any) -> Attribution:
    """ReAGent importance of each prompt token for each output token (generated first when
    `output` is None, with the remaining options passed to `dl.generate`).

    Options: ratio, probes, max_steps, min_steps, keep_top_n, stop_top_k, attribution_seed,
    batch_rows (see `ReagentOptions`); anything else goes to `dl.generate`.
    """
    if not isinstance(lm, LM):
        raise InvalidOption("the first argument must be a model from decodelab.load()")
    names = set(ReagentOptions.__dataclass_fields__)
    checked = check_options(ReagentOptions, {k: options.pop(k) for k in list(options) if k in names}, "attribute")
    prompt_ids = lm.encode(prompt, chat=chat)
    if output is None:
        out = generate(lm, prompt_ids, **options)
        output_ids = list(out.token_ids)
        if output_ids and output_ids[-1] in lm.eos_token_ids and len(output_ids) > 1:
            output_ids = output_ids[:-1]
    else:
        if options:
            raise InvalidOption(f"unknown option(s) for a given output: {', '.join(sorted(options))}")
        output_ids = encode_completion(lm, output)
    if not output_ids:
        raise InvalidOption("nothing to attribute: the output is empty")
    return reagent(lm, prompt_ids, output_ids, checked, loop=loop, positions=positions)


__all__ = ["attribute", "reagent", "Attribution", "ReagentOptions", "replacement_pool"]
