"""Attribution: which prompt tokens mattered (ReAGent), prompt compression that keeps them
(FrugalPrompt), and critical tokens (contrastive likelihood).

Example:
    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=32)
    >>> a = dl.attribute(lm, [1, 5, 6, 7], [9], max_steps=3, probes=4)
"""

from .compress import CompressedPrompt, compress
from .critical import CriticalTokens, critical_tokens
from .reagent import Attribution, ReagentOptions, attribute, reagent

__all__ = ["Attribution", "ReagentOptions", "attribute", "reagent", "compress", "CompressedPrompt", "critical_tokens",
           "CriticalTokens"]
