"""Byte level: exact byte probabilities of tokenized LMs (`ByteLM`), token healing, fill-in-the-middle.

Example:
    >>> import decodelab as dl
    >>> bl = dl.bytes.ByteLM(dl.load("tiny-random", vocab_size=64))
    >>> bl.next_byte_logprobs(b"th").shape
    torch.Size([257])
"""

from .bytelm import ByteLM
from .encodings import encodings
from .ensemble import Ensemble
from .fim import fim
from .heal import HealedOutput, continue_bytes, heal, split_prompt
from .vocab import END, ByteVocab

__all__ = ["ByteLM", "Ensemble", "encodings", "ByteVocab", "END", "HealedOutput", "continue_bytes", "fim", "heal", "split_prompt"]
