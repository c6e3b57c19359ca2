"""Turning a user's `speculative=` value into a (proposer, verifier) pair, and methods by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidOption
from ..models.lm import LM
from .draft_model import DraftModel
from .layer_skip import LayerSkip
from .length import DraftLength
from .prompt_lookup import PromptLookup
from .verifiers import GreedyMatch, RejectionSampling
from .vocab_trim import VocabTrim

VERIFIERS = {"rejection": RejectionSampling, "greedy": GreedyMatch}


def _length(target: LM, options: dict[str, Any], k: int, draft: LM | None = None) -> DraftLength | None:
    if not options.pop("adaptive", False):
        return None
    from .cost import verify_cost_curve

    curve = verify_cost_curve(target)
    draft_cost = 0.0
    if draft is not None:
        draft_cost = verify_cost_curve(draft, sizes=(1,))[1]
    return DraftLength(k_max=k, adaptive=True, verify_cost=curve, draft_cost=draft_cost)


def _prompt_lookup(target: LM, draft: LM | None, options: dict[str, Any]):
    k = options.pop("k", 10)
    return PromptLookup(k=k, length=_length(target, options, k), **options)


def _draft(target: LM, draft: LM | None, options: dict[str, Any]):
    if draft is None:
        raise InvalidOption("speculative method 'draft' needs a draft model (--draft NAME / draft=...)")
    k = options.pop("k", 5)
    return DraftModel(draft, k=k, length=_length(target, options, k, draft), **options)


def _layer_skip(target: LM, draft: LM | None, options: dict[str, Any]):
    k = options.pop("k", 4)
    adaptive = options.pop("adaptive", False)
    spec = LayerSkip(target, layers=options.pop("layers", None), k=k, **options)
    spec.length = _length(target, {"adaptive": adaptive}, k, spec.draft)
    return spec


def _vocab_trim(target: LM, draft: LM | None, options: dict[str, Any]):
    if draft is None:
        raise InvalidOption("speculative method 'vocab-trim' needs a draft model (--draft NAME / draft=...)")
    from ..bench.suite import suite_texts

    size = options.pop("size", 8192)
    k = options.pop("k", 5)
    adaptive = options.pop("adaptive", False)
    spec = VocabTrim.from_corpus(draft, suite_texts(), size=size, k=k, **options)
    spec.length = _length(target, {"adaptive": adaptive}, k, spec.draft)
    return spec


def _token_recycling(target: LM, draft: LM | None, options: dict[str, Any]):
    from .token_recycling import TokenRecycling

    return TokenRecycling(target, **options)


def _draft_tree(preset: dict[str, Any]) -> Callable[..., Any]:
    def build(target: LM, draft: LM | None, options: dict[str, Any]):
        from .draft_tree import DraftTree

        if draft is None:
            raise InvalidOption("tree drafting with a draft model needs one (--draft NAME / draft=...)")
        merged = {**preset, **options}
        if "k" in merged and preset.get("verifier") == "kseq":  # SpecTr: k i.i.d. drafts of length depth
            k, depth = merged.pop("k"), merged.pop("depth", 4)
            merged["branching"] = (k,) + (1,) * (depth - 1)
        return DraftTree(draft, **merged)

    return build


METHODS: dict[str, tuple[Callable[..., Any], str]] = {
    "prompt-lookup": (_prompt_lookup, "n-gram lookup in prompt and output (options: k, min_ngram, max_ngram, adaptive)"),
    "draft": (_draft, "draft model with the same tokenizer (options: k, threshold, adaptive; needs --draft)"),
    "layer-skip": (_layer_skip, "self-drafting with the target's first layers (options: layers, k, threshold, adaptive)"),
    "token-recycling": (_token_recycling, "draft-free trees from recycled candidate tokens (options: width, nodes, adaptive, max_depth)"),
    "draft-tree": (_draft_tree({}), "token tree from a draft model (options: branching, nodes, depth, siblings, verifier, adaptive, min_value; needs --draft)"),
    "dyspec": (_draft_tree({"nodes": 24, "adaptive": True}), "DySpec dynamic tree, greedy by draft probability, sized for this machine (options: nodes, depth, min_value; needs --draft)"),
    "rsd": (_draft_tree({"branching": (3, 2, 1, 1), "siblings": "without_replacement"}), "Recursive Speculative Decoding: siblings without replacement (options: branching; needs --draft)"),
    "spectr": (_draft_tree({"branching": (3, 1, 1, 1), "siblings": "iid", "verifier": "kseq"}), "SpecTr: k i.i.d. drafts, k-sequential selection (options: k, depth; needs --draft)"),
    "vocab-trim": (_vocab_trim, "draft model with a head trimmed to frequent tokens (options: size, k, threshold, adaptive; needs --draft)"),
}
TREE_METHODS = ("token-recycling", "draft-tree", "dyspec", "rsd", "spectr")
ALIASES = {"pld": "prompt-lookup", "ngram": "prompt-lookup", "draft-model": "draft", "layerskip": "layer-skip",
           "recycling": "token-recycling", "tr": "token-recycling", "tree": "draft-tree"}


def make(name: str, target: LM, draft: LM | None = None, **options: Any) -> Any:
    """Build a speculative method by name, e.g. make("prompt-lookup", lm, k=8).

    Chain methods accept `verifier="rejection"|"greedy"`; tree methods accept
    `verifier="without_replacement"|"iid"|"kseq"|"greedy"` (see tree_verifiers).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random")
        >>> spec = make("prompt-lookup", lm, k=4)
    """
    if not isinstance(name, str):
        raise InvalidOption("a speculative method name must be a string")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in METHODS:
        raise InvalidOption(f"unknown speculative method '{name}'; known: {', '.join(METHODS)}")
    if key in TREE_METHODS:  # tree verifiers are chosen by the method itself
        try:
            return METHODS[key][0](target, draft, dict(options))
        except TypeError as exc:
            raise InvalidOption(f"bad option for speculative method '{key}': {exc}") from None
    verifier = options.pop("verifier", None)
    try:
        method = METHODS[key][0](target, draft, dict(options))
    except TypeError as exc:
        raise InvalidOption(f"bad option for speculative method '{key}': {exc}") from None
    if verifier is not None:
        if verifier not in VERIFIERS:
            raise InvalidOption(f"unknown verifier '{verifier}'; known: {', '.join(VERIFIERS)}")
        method.verifier = VERIFIERS[verifier]()
    return method


def resolve_speculative(speculative: Any, lm: LM) -> tuple[Any, Any]:
    """(proposer, verifier) for a method object, a method name, or a (proposer, verifier) pair."""
    if isinstance(speculative, str):
        speculative = make(speculative, lm)
    if isinstance(speculative, tuple) and len(speculative) == 2:
        return speculative
    if not all(hasattr(speculative, m) for m in ("start", "propose", "accepted", "select_rows")):
        raise InvalidOption("speculative must be a method name or a proposer such as dl.spec.PromptLookup()")
    verifier = getattr(speculative, "verifier", None) or RejectionSampling()
    return speculative, verifier
