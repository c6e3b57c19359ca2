"""The speculative methods as registered `Method`s: options defined once, built into Parts.

Selected with `speculative=NAME` and `speculative_options={...}` in Python, `--spec NAME
--spec-option KEY=VALUE` on the CLI, and the `speculative` / `speculative_options` request fields
of the server; `decodelab methods` lists them with their options. Papers: see each proposer's
module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..decoding.method import BuildContext, Capabilities, Method, Parts, Slot, register, register_slot
from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import option
from .draft_model import DraftModel
from .layer_skip import LayerSkip
from .length import DraftLength
from .prompt_lookup import PromptLookup
from .tree_shape import MAX_TREE_NODES
from .verifiers import GreedyMatch, RejectionSampling
from .vocab_trim import VocabTrim

CHAIN_VERIFIERS = {"rejection": RejectionSampling, "greedy": GreedyMatch}
MAX_K = 64
MAX_NODES = MAX_TREE_NODES
# speculative methods draft and verify; they compose with grammar masks (the loop masks along drafts)
SPECULATIVE = Capabilities(lossless=True, batchable=False, composes_with=frozenset({"constraint"}))


def _from_object(value: Any, ctx: BuildContext) -> Parts:
    """A proposer object (dl.spec.PromptLookup(...)) or a (proposer, verifier) pair."""
    if isinstance(value, tuple) and len(value) == 2:
        return Parts(proposer=value[0], verifier=value[1])
    if not all(hasattr(value, m) for m in ("start", "propose", "accepted", "select_rows")):
        raise InvalidOption("speculative must be a method name or a proposer such as dl.spec.PromptLookup()")
    return Parts(proposer=value, verifier=getattr(value, "verifier", None) or RejectionSampling())


register_slot(Slot("speculative", "speculative decoding: a proposer drafts, one target forward verifies",
                   selector="speculative", options_keyword="speculative_options", from_object=_from_object))


def _length(target: LM, adaptive: bool, k: int, draft: LM | None = None) -> DraftLength | None:
    if not adaptive:
        return None
    from .cost import verify_cost_curve

    curve = verify_cost_curve(target)
    draft_cost = verify_cost_curve(draft, sizes=(1,)).get(1, 0.0) if draft is not None else 0.0
    return DraftLength(k_max=k, adaptive=True, verify_cost=curve, draft_cost=draft_cost)


def _chain(proposer: Any, verifier: str | None) -> Parts:
    if verifier is not None:
        proposer.verifier = CHAIN_VERIFIERS[verifier]()
    return Parts(proposer=proposer, verifier=getattr(proposer, "verifier", None) or RejectionSampling())


def _tree(proposer: Any) -> Parts:
    return Parts(proposer=proposer, verifier=proposer.verifier)


ChainVerifier = Literal["rejection", "greedy"]
TreeVerifier = Literal["without_replacement", "iid", "kseq", "greedy"]
ADAPTIVE_HELP = "size drafts from the measured verify cost t(n) and the observed acceptance"
DRAFT_HELP = "the draft model (Python: an LM or a name; CLI: --draft; server: a served model's name)"


def _need_draft(ctx: BuildContext, value: Any, method: str) -> LM:
    if value is None:
        raise InvalidOption(f"speculative method '{method}' needs a draft model (--draft NAME / draft=...)")
    return ctx.model(value, "draft")


@dataclass
class PromptLookupOptions:
    k: int = option(10, "draft tokens per step at most", ge=1, le=MAX_K)
    min_ngram: int = option(1, "shortest n-gram to match", ge=1, le=16)
    max_ngram: int = option(3, "longest n-gram to match", ge=1, le=16)
    adaptive: bool = option(False, ADAPTIVE_HELP)
    verifier: ChainVerifier | None = option(None, "rejection (lossless sampling, default) or greedy")


def _build_prompt_lookup(ctx: BuildContext, o: PromptLookupOptions) -> Parts:
    return _chain(PromptLookup(k=o.k, min_ngram=o.min_ngram, max_ngram=o.max_ngram,
                               length=_length(ctx.lm, o.adaptive, o.k)), o.verifier)


@dataclass
class DraftOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    k: int = option(5, "draft tokens per step at most", ge=1, le=MAX_K)
    threshold: float | None = option(None, "stop drafting when the draft's top probability falls below this",
                                     gt=0, lt=1)
    adaptive: bool = option(False, ADAPTIVE_HELP)
    verifier: ChainVerifier | None = option(None, "rejection (lossless sampling, default) or greedy")


def _build_draft(ctx: BuildContext, o: DraftOptions) -> Parts:
    draft = _need_draft(ctx, o.draft, "draft")
    return _chain(DraftModel(draft, k=o.k, threshold=o.threshold, length=_length(ctx.lm, o.adaptive, o.k, draft)),
                  o.verifier)


@dataclass
class LayerSkipOptions:
    layers: int | None = option(None, "target layers the draft runs (default: half)", ge=1, le=1024)
    k: int = option(4, "draft tokens per step at most", ge=1, le=MAX_K)
    threshold: float | None = option(None, "stop drafting below this top probability", gt=0, lt=1)
    adaptive: bool = option(False, ADAPTIVE_HELP)
    verifier: ChainVerifier | None = option(None, "rejection (lossless sampling, default) or greedy")


def _build_layer_skip(ctx: BuildContext, o: LayerSkipOptions) -> Parts:
    spec = LayerSkip(ctx.lm, layers=o.layers, k=o.k, threshold=o.threshold)
    spec.length = _length(ctx.lm, o.adaptive, o.k, spec.draft)
    return _chain(spec, o.verifier)


@dataclass
class VocabTrimOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    size: int = option(8192, "tokens the trimmed draft head keeps (most frequent in the prompt suites)", ge=1,
                       le=1_000_000)
    k: int = option(5, "draft tokens per step at most", ge=1, le=MAX_K)
    threshold: float | None = option(None, "stop drafting below this top probability", gt=0, lt=1)
    adaptive: bool = option(False, ADAPTIVE_HELP)
    verifier: ChainVerifier | None = option(None, "rejection (lossless sampling, default) or greedy")


def _build_vocab_trim(ctx: BuildContext, o: VocabTrimOptions) -> Parts:
    from ..corpus import suite_texts

    draft = _need_draft(ctx, o.draft, "vocab-trim")
    spec = VocabTrim.from_corpus(draft, suite_texts(), size=o.size, k=o.k, threshold=o.threshold)
    spec.length = _length(ctx.lm, o.adaptive, o.k, spec.draft)
    return _chain(spec, o.verifier)


@dataclass
class TokenRecyclingOptions:
    width: int = option(8, "candidate tokens kept per vocabulary entry", ge=1, le=64)
    nodes: int = option(32, "tree nodes at most", ge=1, le=MAX_NODES)
    adaptive: bool = option(True, "size the tree from the measured t(n) and learned acceptance")
    max_depth: int = option(8, "tree depth at most", ge=1, le=64)
    verifier: TreeVerifier | None = option(None, "tree verifier (default: recursive rejection)")


def _build_token_recycling(ctx: BuildContext, o: TokenRecyclingOptions) -> Parts:
    from .token_recycling import TokenRecycling

    return _tree(TokenRecycling(ctx.lm, width=o.width, nodes=o.nodes, adaptive=o.adaptive, max_depth=o.max_depth,
                                verifier=o.verifier))


@dataclass
class DraftTreeOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    branching: tuple[int, ...] | None = option(
        None, f"children per depth, e.g. 3,2,1 (constant tree, {MAX_NODES} nodes at most); none: dynamic (DySpec)",
        ge=1, le=64, max_length=64)
    nodes: int = option(16, "tree nodes at most", ge=1, le=MAX_NODES)
    depth: int = option(6, "tree depth at most", ge=1, le=64)
    siblings: Literal["without_replacement", "iid"] = option("without_replacement", "how siblings are drawn")
    verifier: TreeVerifier | None = option(None, "tree verifier (default from siblings)")
    adaptive: bool = option(False, "cut the tree to the size that maximises expected tokens per second")
    min_value: float = option(0.02, "dynamic trees: smallest path probability worth a node", ge=0, lt=1)


def _draft_tree(preset: dict[str, Any], options_type: type) -> Any:
    def build(ctx: BuildContext, o: Any) -> Parts:
        from .draft_tree import DraftTree

        values = {k: v for k, v in vars(o).items() if v is not None}
        draft = _need_draft(ctx, values.pop("draft", None), "tree drafting")
        merged = {**preset, **values}
        if "k" in merged:  # SpecTr: k i.i.d. drafts of length depth
            k, depth = merged.pop("k"), merged.pop("depth")
            merged["branching"] = (k,) + (1,) * (depth - 1)
        return _tree(DraftTree(draft, **merged))

    return build


@dataclass
class DySpecOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    nodes: int = option(24, "tree nodes at most", ge=1, le=MAX_NODES)
    depth: int = option(6, "tree depth at most", ge=1, le=64)
    min_value: float = option(0.02, "smallest path probability worth a node", ge=0, lt=1)


@dataclass
class RSDOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    branching: tuple[int, ...] = option((3, 2, 1, 1), f"children per depth (siblings drawn without replacement; "
                                        f"{MAX_NODES} nodes at most)", ge=1, le=64, max_length=64)


@dataclass
class SpecTrOptions:
    draft: Any = option(None, DRAFT_HELP, cli=False)
    k: int = option(3, "i.i.d. draft sequences", ge=1, le=16)
    depth: int = option(4, "length of each draft sequence", ge=1, le=64)


SPEC_METHODS = [
    Method("prompt-lookup", "speculative", "n-gram lookup in prompt and output",
           "Saxena 2023, Prompt Lookup Decoding; Leviathan et al. 2023 (verification)", PromptLookupOptions,
           _build_prompt_lookup, SPECULATIVE, aliases=("pld", "ngram"), example={"k": 4}),
    Method("draft", "speculative", "draft model with the same tokenizer",
           "Leviathan, Kalman & Matias 2023; Chen et al. 2023, Speculative Sampling", DraftOptions, _build_draft,
           SPECULATIVE, aliases=("draft-model",), example={"draft": "draft", "k": 3}),
    Method("layer-skip", "speculative", "self-drafting with the target's first layers",
           "Elhoushi et al. 2024, LayerSkip; Zhang et al. 2024, Draft & Verify", LayerSkipOptions, _build_layer_skip,
           SPECULATIVE, aliases=("layerskip",), example={"layers": 1, "k": 3}),
    Method("token-recycling", "speculative", "draft-free trees from recycled candidate tokens",
           "Luo et al. 2025, Turning Trash into Treasure: Token Recycling", TokenRecyclingOptions,
           _build_token_recycling, SPECULATIVE, aliases=("recycling", "tr"),
           example={"nodes": 8, "adaptive": False}),
    Method("draft-tree", "speculative", "token tree from a draft model",
           "Miao et al. 2024, SpecInfer; Jeon et al. 2024, RSD", DraftTreeOptions, _draft_tree({}, DraftTreeOptions),
           SPECULATIVE, aliases=("tree",), example={"draft": "draft", "branching": (2, 1)}),
    Method("dyspec", "speculative", "DySpec dynamic tree, greedy by draft probability, sized for this machine",
           "Xiong et al. 2024, DySpec", DySpecOptions, _draft_tree({"adaptive": True}, DySpecOptions), SPECULATIVE,
           example={"draft": "draft", "nodes": 6, "depth": 3}),
    Method("rsd", "speculative", "Recursive Speculative Decoding: siblings without replacement",
           "Jeon et al. 2024, Recursive Speculative Decoding", RSDOptions,
           _draft_tree({"siblings": "without_replacement"}, RSDOptions), SPECULATIVE,
           example={"draft": "draft", "branching": (2, 2)}),
    Method("spectr", "speculative", "SpecTr: k i.i.d. drafts, k-sequential selection",
           "Sun et al. 2023, SpecTr: Fast Speculative Decoding via Optimal Transport", SpecTrOptions,
           _draft_tree({"siblings": "iid", "verifier": "kseq"}, SpecTrOptions), SPECULATIVE,
           example={"draft": "draft", "k": 2, "depth": 2}),
    Method("vocab-trim", "speculative", "draft model with a head trimmed to frequent tokens",
           "Goel et al. 2025, VocabTrim", VocabTrimOptions, _build_vocab_trim, SPECULATIVE,
           example={"draft": "draft", "size": 32}),
]
for _method in SPEC_METHODS:
    register(_method)


def make(name: str, target: LM, draft: LM | None = None, **options: Any) -> Any:
    """Build a speculative method by name: its proposer, with its verifier as `.verifier`.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random")
        >>> spec = make("prompt-lookup", lm, k=4)
    """
    from ..decoding.method import get_method
    from ..sampling.config import SamplingConfig

    method = get_method("speculative", name)
    if draft is not None and "draft" in method.option_names():  # a shared --draft is ignored by draft-free methods
        options["draft"] = draft
    parts = method.build(BuildContext(target, SamplingConfig(), 1), method.check(options))
    parts.proposer.verifier = parts.verifier
    return parts.proposer
