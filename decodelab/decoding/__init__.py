"""Decoding: the propose -> verify -> accept loop, generate(), stream(), records."""

from .generate import generate, prepare, stream, stream_events
from .loop import DecodeState, SampleVerifier, StepEvent, run_loop
from .protocols import Proposal, Proposer, Verdict, Verifier
from .records import GenerationOutput, GenerationStats, TokenRecord

__all__ = [
    "generate", "stream", "stream_events", "prepare", "DecodeState", "SampleVerifier", "StepEvent",
    "run_loop", "Proposal", "Proposer", "Verdict", "Verifier", "GenerationOutput", "GenerationStats",
    "TokenRecord",
]
