"""`dl.tokenizer.mixture`: data mixture inference with checked options and categories given by name,
file or text (Hayase et al. 2024, "Data Mixture Inference: What do BPE Tokenizers Reveal about their
Training Data?"; the method is in `mixture.py`).

Example:
    >>> import decodelab as dl
    >>> cats = dl.tokenizer.builtin_categories(("english", "python"), max_chars=100_000)
    >>> tok = dl.tokenizer.train_bpe(dl.tokenizer.mixed_texts(cats, {"english": 0.5, "python": 0.5}, 40_000), 100)
    >>> result = dl.tokenizer.mixture(tok, cats, num_merges=100, progress=False)
    >>> round(sum(result.proportions.values()), 6)
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidOption
from ..sampling.options import check_options
from .corpora import BUILTIN, Category, builtin_categories, category, file_category
from .mixture_lp import MixtureResult, infer_mixture
from .options import MixtureOptions


def resolve_categories(categories: Any, max_chars: int) -> dict[str, Category]:
    """Categories from None (all built-in ones), a list of built-in names, or a mapping of name to a
    Category, a file path, or a list of texts."""
    if categories is None:
        return builtin_categories(BUILTIN, max_chars)
    if isinstance(categories, Mapping):
        out = {}
        for name, value in categories.items():
            if isinstance(value, Category):
                out[name] = value
            elif isinstance(value, str):
                out[name] = file_category(name, value, max_chars)
            elif isinstance(value, Sequence) and all(isinstance(t, str) for t in value):
                out[name] = category(name, list(value), "texts", max_chars)
            else:
                raise InvalidOption(f"category {name!r}: give a Category, a file path or a list of texts",
                                    param="categories")
        return out
    if isinstance(categories, Sequence) and not isinstance(categories, str):
        return builtin_categories(list(categories), max_chars)
    raise InvalidOption("categories: give None, a list of built-in names or a mapping name -> file/texts",
                        param="categories")


def mixture(tokenizer: Any, categories: Any = None, *, progress: bool = True, **options: Any) -> MixtureResult:
    """Infer the share of each category in the training text of a byte-level BPE `tokenizer` (a
    `tokenizers.Tokenizer`, a transformers tokenizer, a decodelab LM or a tokenizer.json path).

    Options (MixtureOptions): num_merges, top_pairs, max_chars."""
    opts = check_options(MixtureOptions, options, "tokenizer mixture")
    cats = resolve_categories(categories, opts.max_chars)
    if not progress:
        return infer_mixture(tokenizer, cats, num_merges=opts.num_merges, top_pairs=opts.top_pairs)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("replaying merges", total=None)
        return infer_mixture(tokenizer, cats, num_merges=opts.num_merges, top_pairs=opts.top_pairs,
                             progress=lambda done, total: bar.update(task, completed=done, total=total))


__all__ = ["mixture", "resolve_categories"]
