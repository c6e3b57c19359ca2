"""Token and sequence uncertainty: score columns on any generation (`scores=`), `score` for a
given text, and cascades that defer to a larger model when the small one is unsure.

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> s = dl.score(lm, "ab", "cd", chat=False, scores=["entropy"])
"""

from . import method  # registers the `scores` option
from .cascade import cascade
from .claims import ClaimScores, ccp
from .method import ScoreObserver, ScoresOptions, parse_score_names
from .sar import SAR, TokenSAR, sar, token_sar
from .score import ScoreResult, score
from .token_scores import TOKEN_SCORES, perplexity
from .uqac import UQAC, uqac

__all__ = ["cascade", "ccp", "ClaimScores", "sar", "token_sar", "SAR", "TokenSAR", "uqac", "UQAC", "method", "ScoreObserver", "ScoresOptions", "parse_score_names", "ScoreResult", "score", "TOKEN_SCORES",
           "perplexity"]
