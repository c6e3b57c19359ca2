"""kNN-LM (Khandelwal, Levy, Jurafsky, Zettlemoyer & Lewis 2020, "Generalization through
Memorization: Nearest Neighbor Language Models").

A datastore maps the model's final hidden state (after the final norm) at every position of a
corpus to the token that came next. At each step the `k` nearest stored states of the current
one (exact L2 search with faiss, `IndexFlatL2`) vote for their next tokens with weights
`softmax(-distance / knn_temperature)`, and the model's distribution is interpolated:
`p = lam * p_knn + (1 - lam) * p_lm`; the sampler's processors then act on log p.

Wang, Cheng, Zhou, Hirschberg & Mao (2023, "kNN-LMs do not improve open-ended generation") found
that the interpolation raises the entropy of the next-token distribution; each output reports the
mean entropy of p_lm and of p over its steps (`out.results["knn-lm"]`), and docs/benchmarks.md
has the measurement. Build a datastore with `decodelab knn build` or `Datastore.build`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..decoding.method import BuildContext, Method, Parts, register
from ..decoding.protocols import Proposal, Verdict
from ..errors import InvalidOption
from ..models.lm import LM
from ..sampling.options import option
from ..sampling.processors import entropy
from .common import KeepsHiddenStates, choose, new_hidden, parts_of, shaped_logits, verdict
from .slot import WITH_CONSTRAINTS

MAX_DATASTORE = 50_000_000


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise InvalidOption("knn-lm needs faiss: pip install 'decodelab[knn]' (faiss-cpu)") from None
    return faiss


def final_states(lm: LM, ids: list[int]) -> torch.Tensor:
    """Final-layer hidden states [n, H] (float32) of a token sequence, one forward (with no cache)."""
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([ids], device=lm.device), output_hidden_states=True)
    return out.hidden_states[-1][0].float()


class Datastore:
    """Keys (hidden states) and values (next tokens) in a faiss index, saved as a folder.

    Example:
        >>> import decodelab as dl, tempfile
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> store = Datastore.build(lm, ["a b c a b c"])
        >>> store.size > 0
        True
    """

    def __init__(self, index: Any, values: np.ndarray, meta: dict[str, Any]):
        self.index = index
        self.values = torch.from_numpy(values.astype(np.int64))
        self.meta = meta

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, lm: LM, texts: list[str], *, chunk: int | None = None, progress: Any = None) -> Datastore:
        """One key per token that has a successor, from each text cut into chunks of the context."""
        faiss = _faiss()
        chunk = min(chunk or lm.context_length, lm.context_length)
        keys, values = [], []
        for text in texts:
            ids = lm.tokenizer.encode(text, add_special_tokens=False)
            for start in range(0, max(len(ids) - 1, 0), chunk):
                part = ids[start:start + chunk + 1]
                if len(part) < 2:
                    continue
                keys.append(final_states(lm, part[:-1]).cpu().numpy())
                values.append(np.asarray(part[1:], dtype=np.int64))
            if progress is not None:
                progress()
        if not keys:
            raise InvalidOption("knn: the corpus has no text to store")
        matrix = np.ascontiguousarray(np.concatenate(keys), dtype=np.float32)
        if len(matrix) > MAX_DATASTORE:
            raise InvalidOption(f"knn: {len(matrix)} keys is more than {MAX_DATASTORE}")
        index = faiss.IndexFlatL2(matrix.shape[1])
        index.add(matrix)
        meta = {"model": lm.name, "vocab_size": lm.vocab_size, "hidden_size": int(matrix.shape[1]),
                "size": int(len(matrix))}
        return cls(index, np.concatenate(values), meta)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _faiss().write_index(self.index, str(folder / "index.faiss"))
        np.save(folder / "values.npy", self.values.numpy())
        (folder / "meta.json").write_text(json.dumps(self.meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, lm: LM | None = None) -> Datastore:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            index = _faiss().read_index(str(folder / "index.faiss"))
            values = np.load(folder / "values.npy")
        except (OSError, ValueError, RuntimeError) as exc:
            raise InvalidOption(f"knn: {folder} is not a datastore from `decodelab knn build` ({exc})") from None
        if lm is not None and (meta.get("vocab_size") != lm.vocab_size
                               or meta.get("hidden_size") != lm.model.config.hidden_size):
            raise InvalidOption(f"knn: the datastore was built with {meta.get('model')!r}, not {lm.name!r}")
        return cls(index, values, meta)

    def distribution(self, queries: torch.Tensor, k: int, temperature: float, vocab: int) -> torch.Tensor:
        """p_knn [B, V] for query states [B, H]."""
        distances, found = self.index.search(np.ascontiguousarray(queries.cpu().numpy(), dtype=np.float32),
                                             min(k, self.size))
        weights = torch.from_numpy(-distances / temperature).softmax(-1)
        out = torch.zeros(len(queries), vocab, dtype=torch.float32)
        return out.scatter_add_(-1, self.values[torch.from_numpy(found)], weights.float()).to(queries.device)


_STORES: dict[str, Datastore] = {}


class KNNLM(KeepsHiddenStates):
    """Verifier of kNN-LM (see the module docstring)."""

    def __init__(self, store: Datastore, k: int, lam: float, temperature: float):
        self.store = store
        self.k = k
        self.lam = lam
        self.temperature = temperature
        self.entropies: dict[int, list[tuple[float, float]]] = {}

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        logits = target_logits[:, 0].float()
        p_lm = logits.softmax(-1)
        h, _ = new_hidden(state)
        p_knn = self.store.distribution(h[:, -1], self.k, self.temperature, p_lm.shape[-1])
        mixed = (self.lam * p_knn + (1 - self.lam) * p_lm).log()
        for b, i in enumerate(state.active):
            pair = (float(entropy(p_lm[b].log())), float(entropy(mixed[b])))
            self.entropies.setdefault(i, []).append(pair)
        return verdict(choose(state, shaped_logits(state, mixed), tie_break=logits))

    def results(self, state: Any, row: int, out: Any) -> None:
        steps = self.entropies.get(row, [])
        mean = [sum(s[j] for s in steps) / max(1, len(steps)) for j in (0, 1)]
        out.results["knn-lm"] = {"mean_entropy_lm": mean[0], "mean_entropy_knn_lm": mean[1],
                                 "datastore_size": self.store.size}


@dataclass
class KNNOptions:
    datastore: str | None = option(None, "a datastore from `decodelab knn build` (its name or folder), or "
                                   "suite:NAME to build one now from a packaged prompt suite", required=True,
                                   max_length=4096)
    k: int = option(16, "neighbours per step", ge=1, le=1024)
    lam: float = option(0.25, "weight of the kNN distribution (0: the model alone)", ge=0, le=1)
    knn_temperature: float = option(1.0, "distances are divided by this before the softmax", gt=0, le=1e6)


def knn_dir() -> Path:
    """Where named datastores live: <decodelab cache>/knn (what the server may read)."""
    from ..models.registry import cache_dir

    return cache_dir() / "knn"


def resolve_datastore(lm: LM, value: str, served: bool) -> Datastore:
    """A datastore by value: `suite:NAME` (built now from a packaged prompt suite, kept in memory),
    a name under `knn_dir()`, or (not on the server) a folder path."""
    if value.startswith("suite:"):
        key = f"{value}@{id(lm.model)}"
        if key not in _STORES:
            from ..corpus import suite_texts

            _STORES[key] = Datastore.build(lm, suite_texts(value[len("suite:"):]))
        return _STORES[key]
    named = knn_dir() / value
    if "/" not in value and "\\" not in value and named.is_dir():
        path = named
    elif served:
        raise InvalidOption(f"knn: datastore {value!r} is not a named datastore of this server ({knn_dir()})",
                            param="datastore")
    else:
        path = Path(value)
    key = f"{path.resolve()}@{id(lm.model)}"
    if key not in _STORES:
        _STORES[key] = Datastore.load(path, lm)
    return _STORES[key]


def _build(ctx: BuildContext, o: KNNOptions) -> Parts:
    store = resolve_datastore(ctx.lm, o.datastore, served=ctx.models is not None)
    return parts_of(KNNLM(store, o.k, o.lam, o.knn_temperature))


register(Method("knn-lm", "strategy", "kNN-LM: interpolate with nearest neighbours from a datastore",
                "Khandelwal et al. 2020, Generalization through Memorization: Nearest Neighbor Language Models",
                KNNOptions, _build, WITH_CONSTRAINTS, aliases=("knn",), example={"datastore": "suite:quick", "k": 4}))
