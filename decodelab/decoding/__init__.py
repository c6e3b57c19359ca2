"""Decoding: the propose -> verify -> accept loop, the Method registry, generate(), stream(), records."""

from ..sampling.options import option
from .generate import GenerationOptions, Run, compose, generate, stream, stream_events
from .loop import DecodeState, SampleVerifier, StepEvent, reorder_rows, run_loop
from .method import BuildContext, Capabilities, Method, Parts, Slot, get_method, methods, register, register_slot
from .protocols import Constraint, Observer, Proposal, Proposer, RowPolicy, Verdict, Verifier
from .records import GenerationOutput, GenerationStats, TokenRecord

__all__ = [
    "generate", "stream", "stream_events", "compose", "Run", "GenerationOptions", "DecodeState", "SampleVerifier",
    "StepEvent", "reorder_rows", "run_loop", "Proposal", "Proposer", "Verdict", "Verifier", "Constraint", "Observer",
    "RowPolicy", "GenerationOutput", "GenerationStats", "TokenRecord", "Method", "Slot", "Parts", "Capabilities",
    "BuildContext", "register", "register_slot", "methods", "get_method", "option",
]
