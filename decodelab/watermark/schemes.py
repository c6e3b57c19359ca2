"""Watermarked generation: EXP and ITS (distortion-free) and KGW (biased), as loop verifiers.

EXP and ITS follow Kuditipudi, Thickstun, Hashimoto & Liang (2023), "Robust Distortion-free
Watermarks for Language Models": generated token t uses key position (t + shift) mod n, where the
shift tau is random (not part of the key) so that detection searches over it.

- EXP (exponential minimum sampling): next token = argmax_v xi_v^(1/p_v) = argmax_v log(xi_v)/p_v.
  For uniform xi this is exactly a draw from p (the Gumbel-max trick in exponential form).
- ITS (inverse transform sampling): order the vocabulary by the key permutation pi and return the
  first token whose cumulative probability reaches u. For uniform u this is exactly a draw from p.

Both are applied to the *processed* distribution (temperature, top-k, top-p, ...), so they compose
with any sampler and are exactly distortion-free for one sample over a random key; within one text
two tokens at the same key position are dependent (n should exceed the text length).

KGW: Kirchenbauer, Geiping, Wen, Katz, Miers & Goldstein (2023), "A Watermark for Large Language
Models": the previous token seeds a green list (each token green with probability gamma) and
delta is added to green logits before sampling. It changes the distribution on purpose.

Plug point: `WatermarkVerifier` is a `decodelab.decoding.Verifier`; with no proposer the loop calls
it with an empty proposal and it chooses the next token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..decoding.loop import DecodeState
from ..decoding.method import BuildContext, Capabilities, Method, Parts, Slot, register, register_slot
from ..decoding.protocols import Proposal, Verdict
from ..decoding.records import GenerationOutput
from ..errors import InvalidOption
from ..models.lm import LM, Prompt
from ..sampling.options import option
from .keys import check_key, green_mask, its_key, noise

SCHEMES = ("exp", "its", "kgw")
DEFAULT_N = 256
MAX_N = 1024  # key sequences are n x vocab: bound memory and detection time


def exp_choice(probs: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """argmax_v log(xi_v) / p_v per row; zero-probability tokens can never win."""
    score = torch.log(xi.double()) / probs.double()  # log xi < 0, so p = 0 gives -inf
    return score.argmax(-1)


def its_choice(probs: torch.Tensor, u: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Inverse transform sampling in key order: order[r] is the token of rank r."""
    ordered = probs.double()[:, order]
    cdf = ordered.cumsum(-1)
    index = torch.searchsorted(cdf, (u.double() * cdf[:, -1])[:, None], right=False).squeeze(-1)
    index = index.clamp(max=probs.shape[-1] - 1)
    token = order[index]
    # Rounding at the top edge could land on a zero-probability token: step back to the last real one.
    zero = probs.gather(-1, token[:, None]).squeeze(-1) <= 0
    if bool(zero.any()):
        last = (ordered > 0).double().cumsum(-1).argmax(-1)
        token = torch.where(zero, order[last], token)
    return token


class WatermarkVerifier:
    """Chooses each next token with a watermark scheme from the processed target distribution.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=16)
        >>> out = dl.generate(lm, "ab", max_new_tokens=3, temperature=1.0,
        ...                   speculative=(None, WatermarkVerifier("exp", key="k", shifts=[0])))
    """

    def __init__(self, scheme: str, *, key: Any, shifts: int | list[int] | None = None, n: int = DEFAULT_N,
                 gamma: float = 0.25, delta: float = 2.0):
        self.scheme = scheme
        self.key = check_key(key)
        self.n = n
        self.shift = shifts
        self.shifts: list[int] = []
        self.gamma = gamma
        self.delta = delta
        self._its: tuple[torch.Tensor, torch.Tensor] | None = None

    def start(self, state: DecodeState) -> None:
        """Fix each row's key shift (drawn from the row's generator unless given)."""
        self.shifts = _shifts(self.shift, len(state.rows), self.n, state)

    def _positions(self, state: DecodeState) -> list[int]:
        return [(len(state.rows[i].output_ids) + self.shifts[i]) % self.n for i in state.active]

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        processed = state.process(target_logits[:, 0], state.history())
        batch = processed.shape[0]
        vocab = processed.shape[-1]
        device = processed.device
        if self.scheme == "kgw":
            previous = torch.tensor([state.context(b)[-1] for b in range(batch)], device="cpu")
            green = green_mask(self.key, previous, vocab, self.gamma).to(device)
            biased = processed + self.delta * green.to(processed.dtype)  # -inf stays -inf
            tokens = state.sample(biased)
        else:
            probs = processed.softmax(-1)
            positions = torch.tensor(self._positions(state))
            if self.scheme == "exp":
                # only this step's key rows: the same numbers as exp_key_sequence's rows, without its
                # n x V table (seconds and hundreds of MB per key on a large vocabulary)
                xi = noise(self.key).uniform(positions[:, None], vocab)
                tokens = exp_choice(probs, xi.to(device))
            else:
                if self._its is None:
                    u, rank = its_key(self.key, self.n, vocab)
                    order = torch.empty(vocab, dtype=torch.long)
                    order[torch.from_numpy(rank.copy())] = torch.arange(vocab)
                    self._its = (torch.from_numpy(u.copy()), order)
                u, order = self._its
                tokens = its_choice(probs, u[positions].to(device), order.to(device))
        return Verdict(torch.zeros(batch, dtype=torch.long), tokens.to(device), ["target"] * batch)


def _shifts(shift: int | list[int] | None, rows: int, n: int, state: DecodeState) -> list[int]:
    if shift is None:
        # The shift is not part of the key: draw it from each row's own generator (seeded runs repeat).
        return [int(torch.randint(0, n, (1,), generator=g).item()) for g in state.generators]
    values = [shift] * rows if isinstance(shift, int) and not isinstance(shift, bool) else shift
    if not isinstance(values, (list, tuple)) or len(values) != rows:
        raise InvalidOption(f"shift must be an integer or one integer per prompt ({rows})")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
            raise InvalidOption(f"shift must be an integer in [0, 2^63), got {str(value)[:40]}", param="shift")
    return [int(v) % n for v in values]


@dataclass
class WatermarkOptions:
    """Options of `watermark={...}` (the mapping's "scheme" names the method)."""

    key: Any = option(None, "the secret key (text or integer; required)")
    n: int = option(DEFAULT_N, "EXP/ITS: key sequence length (detection cost grows with it)", ge=1, le=MAX_N)
    shift: Any = option(None, "EXP/ITS: key offset, one integer or one per prompt (default: random per row)")
    gamma: float = option(0.25, "KGW: green-list fraction", gt=0, lt=1)
    delta: float = option(2.0, "KGW: logit bias of green tokens", ge=0, le=100)


def _build(scheme: str):
    def build(ctx: BuildContext, o: WatermarkOptions) -> Parts:
        check_key(o.key)
        return Parts(verifier=WatermarkVerifier(scheme, key=o.key, shifts=o.shift, n=o.n, gamma=o.gamma,
                                                delta=o.delta))

    return build


register_slot(Slot("watermark", "watermarked sampling: a keyed verifier chooses each token", selector="watermark",
                   name_key="scheme", default="exp"))
PAPER_KTHL = "Kuditipudi, Thickstun, Hashimoto & Liang 2023, Robust Distortion-free Watermarks for Language Models"
for _scheme, _summary, _paper in (
        ("exp", "exponential minimum sampling (distortion-free over random keys)", PAPER_KTHL),
        ("its", "inverse transform sampling (distortion-free over random keys)", PAPER_KTHL),
        ("kgw", "green-list logit bias (changes the distribution)",
         "Kirchenbauer et al. 2023, A Watermark for Large Language Models")):
    # distortion-free means: exact over random keys, not for one key (so not "lossless" here)
    register(Method(_scheme, "watermark", _summary, _paper, WatermarkOptions, _build(_scheme),
                    Capabilities(lossless=False, exact_law=True, needs_sampling=True, composes_with=frozenset()),
                    example={"key": "conformance"}))


def generate(lm: LM, prompt: Prompt | list[Prompt], *, key: Any, scheme: str = "exp", n: int = DEFAULT_N,
             shift: int | list[int] | None = None, gamma: float = 0.25, delta: float = 2.0,
             **generate_options: Any) -> GenerationOutput | list[GenerationOutput]:
    """Generate watermarked text: `decodelab.generate(..., watermark={...})` with sampling on.

    scheme "exp" / "its" (distortion-free, key sequence of length n, random shift unless given) or
    "kgw" (green-list fraction gamma, logit bias delta). Sampling defaults to temperature 1 when
    neither the call nor the model sets one (greedy decoding would leave no room for a watermark).

    Example:
        >>> import decodelab as dl
        >>> from decodelab import watermark
        >>> lm = dl.load("tiny-random", vocab_size=32)
        >>> out = watermark.generate(lm, "hello", key="secret", max_new_tokens=8)
        >>> len(out.token_ids) <= 8
        True
    """
    from ..decoding.generate import generate as decode

    if generate_options.get("temperature") is None and "temperature" not in lm.generation_defaults():
        generate_options["temperature"] = 1.0
    return decode(lm, prompt, watermark={"scheme": scheme, "key": key, "n": n, "shift": shift, "gamma": gamma,
                                         "delta": delta}, **generate_options)


__all__ = ["generate", "WatermarkVerifier", "WatermarkOptions", "exp_choice", "its_choice", "SCHEMES"]
