"""`tiny-random`: a seeded random Llama with a small character vocabulary, for fast exact tests.

Vocabularies of a few dozen tokens make exact distributions enumerable. A random model's
next-token distributions are nearly flat, which hides many sampling bugs; `init_std` scales the
initial weights so that distributions are peaked enough for statistical tests to have power.
"""

from __future__ import annotations

import string

import torch

from ..errors import InvalidOption
from .lm import LM

SPECIALS = ["<eos>", "<bos>", "<unk>"]
ALPHABET = list(" etaoinshrdlucmfwypvbgkjqxz" + "ETAOINSHRDLUCMFWYPVBGKJQXZ" + string.digits + ".,!?;:'\"-()\n")


def tiny_vocab(vocab_size: int) -> list[str]:
    base = SPECIALS + ALPHABET
    vocab = base[:vocab_size]
    vocab += [f"<t{i}>" for i in range(len(vocab), vocab_size)]
    return vocab


def build_tokenizer(vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = tiny_vocab(vocab_size)
    core = Tokenizer(models.WordLevel({tok: i for i, tok in enumerate(vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", bos_token="<bos>", unk_token="<unk>", pad_token="<eos>"
    )


def load_tiny_random(
    vocab_size: int = 64,
    *,
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    context_length: int = 512,
    init_std: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> LM:
    """A random Llama; same arguments and seed give the same weights.

    Example:
        >>> lm = load_tiny_random(vocab_size=32, seed=1)
        >>> lm.vocab_size
        32
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if vocab_size < len(SPECIALS) + 1:
        raise InvalidOption(f"tiny-random needs vocab_size >= {len(SPECIALS) + 1}, got {vocab_size}")
    if num_layers < 1 or hidden_size % num_heads or num_heads % num_kv_heads:
        raise InvalidOption("tiny-random needs num_layers >= 1 and heads dividing hidden_size")
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=context_length,
        initializer_range=init_std,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(dtype)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=0, pad_token_id=0)
    name = f"tiny-random(vocab={vocab_size},seed={seed},layers={num_layers},std={init_std})"
    return LM(model=model, tokenizer=build_tokenizer(vocab_size), name=name, chat=False)
