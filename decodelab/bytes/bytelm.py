"""`ByteLM`: the exact byte-level language model of a tokenized LM.

Phan, Amos, Gat, Havasi, Muckley & Ullrich (2024), "Exact Byte-Level Probabilities from Tokenized
Language Models for FIM-Tasks and Model Ensembles" (the Byte-Token Representation Lemma), and
Hayase, Liu, Smith & Oh (2025), "Sampling from Your Language Model One Byte at a Time"
(ByteSampler). Our own implementation for byte-level BPE vocabularies.

The idea. A token LM generates tokens t1 t2 ... until an end token; the text is the
concatenation of their bytes. The probability that the text starts with bytes x is the sum, over
the *cover encodings* of x, of their probabilities: token sequences c + t where the bytes of c
are x[:j] (j < |x|) and the bytes of the last token t start with x[j:]. We keep the covers as
*hypotheses* (c, r): a token sequence c whose bytes are x[:j] and the pending bytes r = x[j:]
that the next token must start with. The next-byte law is then the sum, over hypotheses, of
P(c) times the mass of next tokens that extend r by each byte b (a range of the sorted
vocabulary, see `vocab`), plus P(c) p(end | c) for hypotheses with nothing pending. Reading a
byte b keeps each hypothesis whose r + b still starts some token, and adds c + t for every token
t whose bytes are exactly r + b; only those new token sequences need a model call, and all of a
step's new sequences go to the model in one tree forward (engine `forward_tree`) over the
tokens that every hypothesis shares (the *trunk*, kept in the KV cache).

What is exact. With `prune=0` and `max_hypotheses=None` every tokenization is kept, canonical
or not, so the byte law is exactly the token model's law of texts (tests enumerate all
tokenizations). That set grows exponentially with the text, so by default hypotheses whose
mass is below `prune` times the step's mass are dropped (trained models put almost no mass on
non-canonical tokenizations); the next-byte laws still sum to one. Added tokens (chat and FIM
markers) get probability zero and the token law is renormalised over text and end tokens.

Example:
    >>> import decodelab as dl
    >>> bl = ByteLM(dl.load("tiny-random", vocab_size=64))
    >>> bl.next_byte_logprobs(b"th").shape
    torch.Size([257])
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from ..engine.sequence import Sequence
from ..errors import InvalidOption, InvalidPrompt
from ..models.lm import LM
from .vocab import END, ByteVocab

MEMO_SIZE = 4096  # next-byte laws remembered per prefix


@dataclass(eq=False)
class Node:
    """A token sequence (context + tokens down to this node) and, once computed, its next-token law."""

    token: int
    parent: Node | None
    end: int  # bytes of text covered by the sequence
    logw: float  # log P(sequence) under the renormalised token model
    logp: torch.Tensor | None = None  # [V] float64 next-token log-probabilities
    cum: torch.Tensor | None = None  # [N + 1] cumulative probabilities in sorted-vocabulary order
    children: dict[int, Node] = field(default_factory=dict)

    def child(self, token: int, end: int) -> Node:
        node = self.children.get(token)
        if node is None:
            assert self.logp is not None
            node = self.children[token] = Node(token, self, end, self.logw + float(self.logp[token]))
        return node


@dataclass
class Hypothesis:
    node: Node
    pending: bytes  # bytes of the text after the node's tokens, which the next token must start with


class ByteLM:
    """Byte-level view of a token LM: next-byte laws, byte-string log-probabilities, byte sampling.

    Args:
        lm: a model with a byte-level BPE tokenizer.
        context: token ids (or text, tokenized as is) the text follows; default: a document start
            (`<|endoftext|>`, else BOS, else the end token).
        prune: drop a hypothesis whose mass is below this fraction of the step's mass (0: exact).
        max_hypotheses: keep at most this many hypotheses per step (None: no limit).
        end_ids: the tokens that end the text (default: the model's EOS ids).

    Example:
        >>> import decodelab as dl
        >>> bl = ByteLM(dl.load("tiny-random", vocab_size=64), prune=0)
        >>> lp = bl.next_byte_logprobs(b"a")
        >>> round(float(lp.exp().sum()), 6)
        1.0
    """

    def __init__(self, lm: LM, context: list[int] | str | None = None, *, prune: float = 1e-6,
                 max_hypotheses: int | None = 64, end_ids: list[int] | None = None):
        if not isinstance(lm, LM):
            raise InvalidOption("ByteLM needs a model from decodelab.load()")
        if not 0 <= float(prune) < 1:
            raise InvalidOption(f"prune must be in [0, 1), got {prune}")
        if max_hypotheses is not None and not 1 <= int(max_hypotheses) <= 100_000:
            raise InvalidOption(f"max_hypotheses must be in 1..100000, got {max_hypotheses}")
        self.lm = lm
        self.vocab = ByteVocab.of(lm, end_ids)
        self.context = self._context_ids(context)
        self.prune = float(prune)
        self.max_hypotheses = max_hypotheses
        self.model_calls = 0
        self.tokens_forwarded = 0
        self._memo: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        self._reset()

    # ----------------------------------------------------------------- public
    def next_byte_logprobs(self, prefix: bytes) -> torch.Tensor:
        """Log-probabilities [257] of the next byte after `prefix` (index 256: end of text)."""
        prefix = _as_bytes(prefix)
        hit = self._memo.get(prefix)
        if hit is not None:
            self._memo.move_to_end(prefix)
            return hit.clone()
        self._advance_to(prefix)
        law = self._law()
        self._memo[prefix] = law
        if len(self._memo) > MEMO_SIZE:
            self._memo.popitem(last=False)
        return law.clone()

    def logprob(self, data: bytes, *, end: bool = False) -> float:
        """log P(the text starts with `data`), or with end=True log P(the text is exactly `data`).

        `logprob(a + b) - logprob(a)` is the sum of the next-byte log-probabilities of b after a.
        """
        data = _as_bytes(data)
        self._advance_to(data)
        total = self._chain[len(data)]
        if end:
            total += float(self._law()[END])
        return total

    def sample(self, max_bytes: int = 256, *, prefix: bytes = b"", seed: int | None = None,
               generator: torch.Generator | None = None) -> bytes:
        """Draw a continuation of `prefix` byte by byte (stops at end of text or `max_bytes`)."""
        if not 1 <= int(max_bytes) <= 1_000_000:
            raise InvalidOption(f"max_bytes must be in 1..1000000, got {max_bytes}")
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(0 if seed is None else int(seed))
        text = _as_bytes(prefix)
        for _ in range(int(max_bytes)):
            probs = self.next_byte_logprobs(text).exp()
            b = int(torch.multinomial(probs, 1, generator=generator))
            if b == END:
                break
            text += bytes([b])
        return text[len(prefix):]

    def covers(self, prefix: bytes) -> list[tuple[list[int], bytes, float]]:
        """The hypotheses after `prefix`: (tokens after the context, pending bytes, log P(tokens))."""
        self._advance_to(_as_bytes(prefix))
        self._ensure_logits()
        return [(_tokens(h.node, self.root), h.pending, h.node.logw) for h in self.hyps]

    def cover_tokens(self, prefix: bytes) -> tuple[list[tuple[list[int], int]], torch.Tensor]:
        """Every (tokens, next token) pair whose text covers `prefix`, and their log-probabilities.

        The next token's bytes strictly extend the pending bytes (or it is an end token when
        nothing is pending). Sampling a pair from these weights and continuing with the token
        model draws texts from the token model conditioned on starting with `prefix`.
        """
        self._advance_to(_as_bytes(prefix))
        self._ensure_logits()
        pairs, weights = [], []
        for h in self.hyps:
            starts, _ = self.vocab.groups(h.pending)
            ids = self.vocab.order[int(starts[0]):int(starts[-1])]
            if not h.pending:
                ids = torch.cat([ids, torch.tensor(self.vocab.end_ids, dtype=torch.long)])
            assert h.node.logp is not None
            lp = h.node.logp[ids] + h.node.logw
            keep = lp > float("-inf")
            base = _tokens(h.node, self.root)
            pairs += [(base, int(t)) for t in ids[keep].tolist()]
            weights.append(lp[keep])
        return pairs, torch.cat(weights) if weights else torch.zeros(0, dtype=torch.float64)

    # ----------------------------------------------------------------- state
    def _context_ids(self, context: list[int] | str | None) -> list[int]:
        tok = self.lm.tokenizer
        if context is None:
            start = tok.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.get_vocab() else None
            for candidate in (start, tok.bos_token_id, *self.vocab.end_ids):
                if candidate is not None:
                    return [int(candidate)]
        if isinstance(context, str):
            ids = list(tok(context, add_special_tokens=False)["input_ids"])
        else:
            ids = [int(t) for t in (context or [])]
        if not ids or any(not 0 <= t < self.lm.vocab_size for t in ids):
            raise InvalidPrompt("the context must be non-empty token ids inside the vocabulary")
        return ids

    def _reset(self) -> None:
        self.seq = Sequence(self.lm, [self.context])
        logits = self.seq.prefill()
        self.model_calls += 1
        self.tokens_forwarded += len(self.context)
        self.root = Node(self.context[-1], None, 0, 0.0)
        self._set_logits(self.root, logits[0])
        self.trunk = self.root  # the deepest node whose tokens are in the KV cache
        self.hyps = [Hypothesis(self.root, b"")]
        self.prefix = b""
        self._chain = [0.0]  # log P(text starts with prefix[:i])
        self._pending_law: torch.Tensor | None = None

    def _advance_to(self, prefix: bytes) -> None:
        if not prefix.startswith(self.prefix):
            self._reset()
        while len(self.prefix) < len(prefix):
            b = prefix[len(self.prefix)]
            lp = float(self._law()[b])
            if lp == float("-inf"):
                raise InvalidPrompt(f"byte {len(self.prefix)} of the text ({bytes([b])!r}) has probability zero "
                                    "under this model")
            self._consume(b)
            self._chain.append(self._chain[-1] + lp)

    def _set_logits(self, node: Node, logits: torch.Tensor) -> None:
        logits = logits.to("cpu", torch.float64).masked_fill(~self.vocab.allowed, float("-inf"))
        node.logp = torch.log_softmax(logits, -1)
        probs = node.logp[self.vocab.order].exp()
        node.cum = torch.cat([probs.new_zeros(1), probs.cumsum(0)])

    # ----------------------------------------------------------------- one byte
    def _masses(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Per hypothesis: masses [H, 256] of "pending + byte b" tokens, end masses [H], and the
        reference log-weight they are scaled by."""
        self._ensure_logits()
        ref = max(h.node.logw for h in self.hyps)
        rows, ends = [], []
        for h in self.hyps:
            starts, _ = self.vocab.groups(h.pending)
            cum = h.node.cum
            assert cum is not None and h.node.logp is not None
            scale = math.exp(h.node.logw - ref)
            rows.append((cum[starts[1:]] - cum[starts[:-1]]).clamp(min=0) * scale)
            end = h.node.logp[self.vocab.end_ids].exp().sum() * scale if not h.pending else torch.tensor(0.0)
            ends.append(end.double())
        return torch.stack(rows), torch.stack(ends), ref

    def _law(self) -> torch.Tensor:
        if self._pending_law is None:
            masses, ends, _ = self._masses()
            mass = torch.cat([masses.sum(0), ends.sum()[None]])
            total = mass.sum()
            if not total > 0:
                raise InvalidPrompt("the text so far has probability zero under this model")
            self._pending_law = (mass / total).log()
        return self._pending_law

    def _consume(self, b: int) -> None:
        """Read byte b: keep the hypotheses it extends, add the new token sequences, prune."""
        masses, _, ref = self._masses()
        candidates: list[tuple[float, Hypothesis]] = []
        for h, mass in zip(self.hyps, masses[:, b].tolist()):
            if mass <= 0:
                continue
            pending = h.pending + bytes([b])
            exact = self.vocab.exact(pending)
            assert h.node.logp is not None
            for t in exact:
                child = h.node.child(t, len(self.prefix) + 1)
                weight = math.exp(child.logw - ref)
                if weight > 0:
                    candidates.append((weight, Hypothesis(child, b"")))
                mass -= weight
            if self.vocab.extendable(pending) and mass > 0:
                candidates.append((mass, Hypothesis(h.node, pending)))
        total = sum(w for w, _ in candidates)
        candidates.sort(key=lambda item: -item[0])
        kept = [h for w, h in candidates if w >= self.prune * total]
        if self.max_hypotheses is not None:
            kept = kept[: self.max_hypotheses]
        self.hyps = kept
        self.prefix += bytes([b])
        self._pending_law = None
        self._forget_dead()

    # ----------------------------------------------------------------- model calls
    def _ensure_logits(self) -> None:
        """One tree forward for every hypothesis whose next-token law is unknown; the tokens all
        hypotheses share move into the KV cache (the trunk)."""
        needed = [h.node for h in self.hyps if h.node.logp is None]
        if not needed:
            return
        common = _common_ancestor([h.node for h in self.hyps])
        order: list[Node] = []
        index: dict[int, int] = {}
        for node in needed:
            path = []
            while node is not self.trunk:
                path.append(node)
                node = node.parent  # type: ignore[assignment]
            for n in reversed(path):
                if id(n) not in index:
                    index[id(n)] = len(order)
                    order.append(n)
        parents = [index[id(n.parent)] if n.parent is not self.trunk else -1 for n in order]
        tokens = torch.tensor([[n.token for n in order]], dtype=torch.long)
        logits = self.seq.forward_tree(tokens, parents)[0]
        self.model_calls += 1
        self.tokens_forwarded += len(order)
        for i, n in enumerate(order):
            if n.logp is None:
                self._set_logits(n, logits[i])
        keep = []
        node = common
        while node is not self.trunk and node is not None:
            keep.append(index[id(node)])
            node = node.parent
        self.seq.keep_tree_path([keep[::-1]])
        if keep:
            self.trunk = common

    def _forget_dead(self) -> None:
        """Drop subtrees no hypothesis can reach again (frees their next-token laws)."""
        live = {id(h.node) for h in self.hyps}
        for h in self.hyps:
            node = h.node.parent
            while node is not None and id(node) not in live:
                live.add(id(node))
                node = node.parent
        stack = [self.root]
        while stack:
            node = stack.pop()
            for token, child in list(node.children.items()):
                if id(child) in live:
                    stack.append(child)
                else:
                    del node.children[token]


def _common_ancestor(nodes: list[Node]) -> Node:
    def path(node: Node) -> list[Node]:
        out = []
        while node is not None:
            out.append(node)
            node = node.parent  # type: ignore[assignment]
        return out[::-1]

    paths = [path(n) for n in nodes]
    common = paths[0][0]
    for depth in range(min(len(p) for p in paths)):
        if all(p[depth] is paths[0][depth] for p in paths):
            common = paths[0][depth]
        else:
            break
    return common


def _tokens(node: Node, root: Node) -> list[int]:
    out = []
    while node is not root:
        out.append(node.token)
        node = node.parent  # type: ignore[assignment]
    return out[::-1]


def _as_bytes(data: bytes | str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise InvalidOption(f"expected bytes or text, got {type(data).__name__}")
