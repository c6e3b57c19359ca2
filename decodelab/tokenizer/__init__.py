"""Tokenizer analyses: merge-list mixture inference, digit-grouping transforms, a character-level suite.

    >>> import decodelab as dl
    >>> dl.tokenizer.group_digits("12345 + 678", "r2l")
    '12,345 + 678'
"""

from .api import mixture
from .bpe import merges_of, train_bpe, word_counts
from .char_suite import CharbenchReport, charbench, make_items
from .corpora import Category, builtin_categories, file_category, word_frequencies
from .digit_grouping import DigitsReport, digit_tokens, digits, group_digits, problems
from .mixture_lp import MixtureResult, infer_mixture, mean_absolute_error, mixed_texts, random_proportions
from .options import CharbenchOptions, DigitsOptions, MixtureOptions

__all__ = ["mixture", "merges_of", "train_bpe", "word_counts", "Category", "builtin_categories", "file_category",
           "word_frequencies", "MixtureResult", "infer_mixture", "mean_absolute_error", "mixed_texts",
           "random_proportions", "group_digits", "problems", "digits", "DigitsReport", "digit_tokens",
           "charbench", "CharbenchReport", "make_items", "MixtureOptions", "DigitsOptions", "CharbenchOptions"]
