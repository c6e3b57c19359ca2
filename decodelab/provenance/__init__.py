"""Provenance: calibrated tests of where a text or a model came from. Every test returns p-values
that are uniform when its null holds (rank tests against exchangeable null draws).

- `mia`: membership inference (loss, zlib, Min-K%, ICP-MIA) against a reference set.
- `make_identifier` / `insert` / `detect_identifiers`: ghost sentences / data watermarks.
- `palimpsest`: is a model derived from one trained on texts in a known random order?
- `commit` / `open_blocks` / `verify_block` / `audit`: CoIn-style audit of billed hidden tokens.
- `find_triggers` / `verify_fingerprint`: unconditional token forcing and fingerprint verification.
- `train_on_texts`: train a small model on known texts in a known order (for tests and evaluations).

Example:
    >>> import decodelab as dl
    >>> ident = dl.provenance.make_identifier(kind="chars", length=12, seed=3)
    >>> len(ident)
    12
"""

from .coin import Auditor, AuditResult, CoinOptions, audit, commit, inflate, open_blocks, verify_block
from .fingerprint import TriggerCandidate, find_triggers, verify_fingerprint
from .identifiers import IdentifierOptions, IdentifierResult, detect_identifiers, insert, make_identifier
from .mia import MiaOptions, MiaReport, MiaResult, mia
from .palimpsest import PalimpsestOptions, PalimpsestResult, palimpsest
from .pvalues import rank_p_values
from .train import train_on_texts

__all__ = ["mia", "MiaOptions", "MiaReport", "MiaResult", "make_identifier", "insert", "detect_identifiers",
           "IdentifierOptions", "IdentifierResult", "rank_p_values", "train_on_texts", "palimpsest",
           "PalimpsestOptions", "PalimpsestResult", "Auditor", "AuditResult", "CoinOptions", "audit", "commit",
           "inflate", "open_blocks", "verify_block", "find_triggers", "verify_fingerprint", "TriggerCandidate"]
