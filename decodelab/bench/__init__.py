"""Benchmarks: run decoding methods side by side on a prompt suite and report speed and acceptance.

Example:
    >>> import decodelab as dl
    >>> from decodelab.bench import load_suite, run_bench, write_report
    >>> lm = dl.load("tiny-random", vocab_size=64)
    >>> result = run_bench(lm, ["plain", "hf"], load_suite("quick", limit=2), max_new_tokens=4, progress=False)
    >>> sorted(result.summary)
    ['hf', 'plain']
"""

from .calibrate import calibrate_layer_skip
from .harness import BenchResult, PromptResult, Summary, machine_info, run_bench
from .methods import (
    BUILTIN_METHODS,
    BenchMethod,
    BenchMethodError,
    MethodRun,
    RunSettings,
    UnknownBenchMethod,
    make_method,
    make_methods,
    parse_method_options,
)
from .report import plot, summary_table, to_markdown, write_report
from .suite import BenchPrompt, Suite, SuiteError, available_suites, load_suite

__all__ = [
    "run_bench", "BenchResult", "PromptResult", "Summary", "machine_info", "load_suite", "Suite", "BenchPrompt",
    "SuiteError", "available_suites", "BenchMethod", "MethodRun", "RunSettings", "UnknownBenchMethod",
    "BenchMethodError", "BUILTIN_METHODS", "make_method", "make_methods", "parse_method_options",
    "write_report", "to_markdown", "summary_table", "plot", "calibrate_layer_skip",
]
