"""Token and sequence uncertainty: score columns on any generation (`scores=`), `score` for a
given text, and cascades that defer to a larger model when the small one is unsure.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> s = dl.score(lm, "ab", "cd", chat=False, scores=["entropy"])
"""

from . import method  # registers the `scores` option
from .cascade import cascade
from .method import ScoreObserver, ScoresOptions, parse_score_names
from .score import ScoreResult, score
from .token_scores import TOKEN_SCORES, perplexity

__all__ = ["cascade", "method", "ScoreObserver", "ScoresOptions", "parse_score_names", "ScoreResult", "score", "TOKEN_SCORES",
           "perplexity"]
