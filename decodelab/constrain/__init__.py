"""Constrained generation: grammars (regex, JSON schema, Lark CFG) -> token masks, AWRS, SMC.

Three methods, one option (`constraint_method`):

- "mask": locally constrained decoding (mask, then sample); works with every sampler and
  every speculative method. Exact for the locally renormalised law.
- "awrs": adaptive weighted rejection sampling (Lipkin et al., 2025): same law, without
  computing full masks, plus an importance weight per token (unbiased for the local normaliser).
- "smc": sequential Monte Carlo over AWRS with `particles=N`: approaches the global law
  p(x | x in the language) and estimates log p(language) (`out.log_marginal_likelihood`).

    >>> import decodelab as dl
    >>> lm = dl.load("tiny-random", vocab_size=16)
    >>> out = dl.generate(lm, [1, 4], regex="(ea|to)", temperature=1.0, seed=0, max_new_tokens=4)
    >>> out.text in ("ea", "to"), out.constraint_satisfied
    (True, True)
"""

from .api import CONSTRAINT_METHODS, METHODS, ConstraintOptions, chosen_method, heal_prompt
from .awrs import AWRSDraw, AWRSVerifier, awrs_sample
from .grammar import Grammar, InvalidConstraint, compile_grammar, ll_tokenizer
from .mask import GrammarConstraint
from .smc import SMCPolicy

__all__ = [
    "CONSTRAINT_METHODS", "METHODS", "ConstraintOptions", "chosen_method", "heal_prompt", "AWRSDraw",
    "AWRSVerifier", "awrs_sample", "Grammar", "InvalidConstraint", "compile_grammar", "ll_tokenizer",
    "GrammarConstraint", "SMCPolicy",
]
