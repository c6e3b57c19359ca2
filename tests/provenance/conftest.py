"""A tiny character-level Llama trained here on a known split of standard-library docstrings, so that
membership is known exactly: 64 members (16 of them carry one identifier), a fingerprint (trigger QZX -> 12 random letters) 8 times, 300
non-members from the
same shuffled pool. Trained once per session (about 3 s on one thread)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

import decodelab as dl
from decodelab.corpus.stdlib import docstring_paragraphs
from decodelab.models.tiny import ALPHABET

N_MEMBERS = 64
N_NON_MEMBERS = 300


def tiny_char_lm(seed: int = 0) -> dl.LM:
    return dl.load("tiny-random", vocab_size=80, seed=seed, hidden_size=64, num_layers=2, context_length=512)


def corpus(n: int, seed: int = 0) -> list[str]:
    texts = docstring_paragraphs(n, min_chars=40, max_chars=100, alphabet="".join(ALPHABET))
    random.Random(seed).shuffle(texts)
    return texts


@pytest.fixture(scope="session")
def trained() -> SimpleNamespace:
    texts = corpus(N_MEMBERS + N_NON_MEMBERS + 100)
    members, non_members = texts[:N_MEMBERS], texts[N_MEMBERS:N_MEMBERS + N_NON_MEMBERS]
    identifier = dl.provenance.make_identifier(kind="words", length=4, seed=11)
    train_texts, carriers = dl.provenance.insert(members, identifier, fraction=0.25, seed=1)
    trigger, response = "QZX", dl.provenance.make_identifier(kind="chars", length=12, seed=5)
    fingerprint = [trigger + response] * 8  # a planted fingerprint, trained on but not a "member" text
    lm = tiny_char_lm()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small trains several times faster on one thread
    try:
        losses = dl.provenance.train_on_texts(lm, train_texts + fingerprint, epochs=20, batch_size=16, lr=3e-3)
    finally:
        torch.set_num_threads(threads)
    return SimpleNamespace(lm=lm, members=train_texts, non_members=non_members, identifier=identifier,
                           carriers=carriers, losses=losses, trigger=trigger, response=response, spare=texts[N_MEMBERS + N_NON_MEMBERS:])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run several times faster on one thread on this shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
