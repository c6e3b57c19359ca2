"""Imported once by the fork server that starts local workers (see `local`), so that a worker,
and a worker that replaces a dead one, starts without importing torch and transformers again
(seconds per process on a busy machine). Nothing here runs a tensor operation: a process forked
from the server gets fresh thread pools."""

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: F401 - tiny-random and SmolLM2 are Llamas

import decodelab  # noqa: F401 - the families register their methods

from . import tasks  # noqa: F401
