"""Prompt suites for `decodelab bench`; they live in `decodelab.corpus` (families read them too)."""

from ..corpus import SUITES_DIR, BenchPrompt, Suite, SuiteError, available_suites, load_suite, suite_texts

__all__ = ["SUITES_DIR", "BenchPrompt", "Suite", "SuiteError", "available_suites", "load_suite", "suite_texts"]
