"""Counterfactual token generation under the Gumbel-max structural causal model (Chatzi, Benz,
Straitouri, Tsirtsis & Gomez-Rodriguez 2024, "Counterfactual Token Generation in Large Language
Models"; the SCM and its posterior from Oberst & Sontag 2019, "Counterfactual Off-Policy
Evaluation with Gumbel-Max Structural Causal Models").

`counterfactual(lm, output, force={position: token})` answers "what would the model have written
had token `position` been `token`, all else (the noise) equal?": it regenerates the text with the
same Gumbel noise at every position and the intervention applied.

- An output of the `gumbel-max` strategy carries its key: the noise is recomputed exactly, so with
  no intervention the text comes back token for token.
- Any other text (sampled elsewhere, or written by hand) gets noise drawn from its posterior:
  per position, the noise given that the observed token won the Gumbel-max race (top-down
  truncated Gumbels). With no intervention this too reproduces the text exactly; under an
  intervention, positions past the observed text draw fresh noise.
"""

from __future__ import annotations

from typing import Any

import torch

from ..decoding.generate import compose
from ..decoding.records import GenerationOutput
from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from ..sampling.keyed import row_generators
from .gumbel import NAME, GumbelMax


def posterior_noise(logprobs: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None = None,
                    ) -> torch.Tensor:
    """Gumbel noise g [T, V] drawn from its posterior given that `argmax(logprobs + g) == tokens`.

    logprobs [T, V] are normalised log-probabilities (-inf allowed off the support). The winner's
    perturbed value is the maximum, Gumbel(logsumexp = 0); every other token's is a Gumbel at its
    log-probability truncated below that maximum. Off-support tokens get prior noise.

    Example:
        >>> lp = torch.tensor([[0.1, 0.7, 0.2]]).log()
        >>> g = posterior_noise(lp, torch.tensor([0]))
        >>> int((lp + g).argmax(-1))
        0
    """
    logprobs = logprobs.double()
    shape = logprobs.shape

    def gumbel(size: tuple[int, ...]) -> torch.Tensor:
        u = torch.rand(size, dtype=torch.float64, generator=generator).clamp(1e-300, 1 - 1e-16)
        return -torch.log(-torch.log(u))

    top = gumbel(shape[:1])[:, None]  # the maximum, location logsumexp(logprobs) = 0
    free = logprobs + gumbel(shape)  # untruncated perturbed values
    truncated = -torch.log(torch.exp(-top) + torch.exp(-free))  # Gumbel(logp) conditioned below the maximum
    perturbed = truncated.scatter(-1, tokens[:, None].long(), top)
    noise = perturbed - logprobs
    support = torch.isfinite(logprobs)
    return torch.where(support, noise, gumbel(shape))


def counterfactual(lm: LM, output: GenerationOutput | list[int] | str, *, prompt: Prompt | None = None,
                   force: dict[int, int] | None = None, key: int | str | None = None, seed: int = 0,
                   max_new_tokens: int | None = None, chat: bool | None = None,
                   **sampler: Any) -> GenerationOutput:
    """Regenerate `output` with the same Gumbel noise and the tokens in `force` fixed.

    `output`: a `GenerationOutput` (its prompt and, from the `gumbel-max` strategy, its key and
    sampler are reused), or token ids / text continuing `prompt`. `force` {position: token id}
    (positions count generated tokens from 0). `key`: the noise key of a gumbel-max generation;
    without one, the noise is drawn from its posterior given the text (seeded by `seed`).
    `sampler`: temperature, top_k, ... as the text was generated with (default temperature 1).
    `out.results["counterfactual"]` says where the text first changed.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hi", chat=False, strategy="gumbel-max", strategy_options={"key": 1},
        ...                   temperature=1, max_new_tokens=6)
        >>> dl.counterfactual(lm, out).token_ids == out.token_ids
        True
        >>> cf = dl.counterfactual(lm, out, force={2: 5})
        >>> cf.token_ids[:3] == out.token_ids[:2] + [5]
        True
    """
    observed, prompt_ids, known = _observed(lm, output, prompt, chat)
    settings = {**known.get("sampler", {"temperature": 1.0}), **sampler}
    key = known.get("key") if key is None else key
    row = known.get("row", 0) if key is not None else 0
    force = _check_force(lm, force or {})
    length = max_new_tokens or max([len(observed)] + [p + 1 for p in force])
    if settings.get("temperature") in (0, 0.0):
        raise InvalidOption("counterfactual generation needs sampling: temperature > 0")
    table = None
    noise_key: int | str = key if key is not None else f"counterfactual/{seed}"
    if key is None:
        if not observed:
            raise InvalidOption("counterfactual: the output has no tokens to infer noise from")
        recorder = GumbelMax(noise_key, dict(enumerate(observed)), record=True)
        _run(lm, prompt_ids, settings, len(observed), recorder)
        logprobs = torch.stack(recorder.logprobs)
        tokens = torch.tensor(observed[: len(logprobs)])
        impossible = torch.isinf(logprobs.gather(-1, tokens[:, None])).flatten().nonzero()
        if len(impossible):
            raise InvalidOption(f"counterfactual: token {int(impossible[0])} of the text has probability 0 under "
                                "these sampler settings (give the settings it was sampled with)")
        table = posterior_noise(logprobs, tokens, row_generators(seed, 1)[0])
    out = _run(lm, prompt_ids, settings, length, GumbelMax(noise_key, force, table, rows=[row]))
    first = next((i for i, (a, b) in enumerate(zip(out.token_ids, observed)) if a != b),
                 None if len(out.token_ids) == len(observed) else min(len(out.token_ids), len(observed)))
    out.results.pop(NAME, None)
    out.results["counterfactual"] = {"noise": "keyed" if key is not None else "posterior", "force": force,
                                     "first_change": first, "factual_token_ids": list(observed)}
    return out


def _run(lm: LM, prompt_ids: list[int], settings: dict[str, Any], length: int, verifier: GumbelMax,
         ) -> GenerationOutput:
    run = compose(lm, [prompt_ids], max_new_tokens=length, strategy=NAME, strategy_options={"key": verifier.key},
                  **settings)
    run.parts.verifier = verifier  # the same strategy, with the intervention and the noise table
    for _ in run.events():
        pass
    return run.outputs()[0]


def _observed(lm: LM, output: Any, prompt: Prompt | None, chat: bool | None,
              ) -> tuple[list[int], list[int], dict[str, Any]]:
    if isinstance(output, GenerationOutput):
        ids = list(output.token_ids)
        prompt_ids = lm.encode(prompt, chat=chat) if prompt is not None else list(output.prompt_token_ids)
        return ids, prompt_ids, dict(output.results.get(NAME, {}))
    if prompt is None:
        raise InvalidOption("counterfactual: give prompt= with a text or token ids")
    if isinstance(output, str):
        ids = lm.tokenizer.encode(output, add_special_tokens=False)
    elif isinstance(output, (list, tuple)) and all(isinstance(t, int) and 0 <= t < lm.vocab_size for t in output):
        ids = list(output)
    else:
        raise InvalidOption("counterfactual: output must be a GenerationOutput, token ids or text")
    return ids, lm.encode(prompt, chat=chat), {}


def _check_force(lm: LM, force: Any) -> dict[int, int]:
    if not isinstance(force, dict):
        raise InvalidOption("force must map positions to token ids, e.g. {3: 42}", param="force")
    out = {}
    for position, token in force.items():
        if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < 32768:
            raise InvalidOption(f"force: position {position!r} must be an integer in [0, 32767]", param="force")
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < lm.vocab_size:
            raise InvalidOption(f"force: token {token!r} must be an id in [0, {lm.vocab_size - 1}]", param="force")
        out[position] = token
    return out
