"""The generation loop: propose -> verify -> accept, for a batch of rows.

State between steps: the KV cache holds every token but the last emitted one (`pending`).
A step forwards [pending, d_1..d_k] in one pass, which scores all k drafts and the position
after them; the verifier accepts d_1..d_a and emits one more token, the new `pending`; the
rejected drafts are rolled back. With no proposer, k = 0 and the step is plain decoding.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..engine.sequence import Sequence
from ..engine.tree import ancestor_mask, depths
from ..models.lm import LM
from ..sampling.config import SamplingConfig, draw_uniforms, process_logits, sample_from_probs
from ..sampling.keyed import row_generators
from ..sampling.processors import TokenHistory, entropy
from .detokenize import IncrementalText
from .protocols import Constraint, Observer, Proposal, Proposer, RowPolicy, Verdict, Verifier
from .records import GenerationOutput, GenerationStats, TokenRecord


@dataclass
class RowState:
    """Bookkeeping of one prompt of the batch."""

    prompt_ids: list[int]
    output_ids: list[int] = field(default_factory=list)
    records: list[TokenRecord] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)
    finish_reason: str | None = None
    text: IncrementalText | None = None
    started: float = field(default_factory=time.perf_counter)  # rows may join a running batch


@dataclass
class StepEvent:
    """Tokens that one row received in one step, and the text they released."""

    row: int
    token_ids: list[int]
    text: str
    finished: bool
    records: list[TokenRecord] = field(default_factory=list)
    output: GenerationOutput | None = None  # set when finished (compose's Run)


class DecodeState:
    """Everything a proposer or verifier may read about the run in progress."""

    def __init__(self, lm: LM, prompts: list[list[int]], config: SamplingConfig, *, seed: int | None,
                 max_new_tokens: int, stop: tuple[str, ...], top_logprobs: int, records: bool,
                 generators: list[torch.Generator] | None = None, groups: list[int] | None = None):
        self.lm = lm
        self.config = config
        self.processors = config.processors()
        self.needs_history = any(p.needs_history for p in self.processors)
        self.rows = [RowState(prompt_ids=list(p), text=IncrementalText(lm.tokenizer, stop)) for p in prompts]
        for row in self.rows:
            row.stats.prompt_tokens = len(row.prompt_ids)
        self.active: list[int] = list(range(len(prompts)))  # batch index -> row index
        self.generators = generators if generators is not None else row_generators(seed, len(prompts))
        # row -> prompt index: row policies (beam search, best-of, SMC) give one prompt several rows
        self.groups = groups if groups is not None else list(range(len(prompts)))
        self.max_new_tokens = max_new_tokens
        self.top_logprobs = top_logprobs
        self.keep_records = records
        self.seq = Sequence(lm, prompts)
        self.pending = torch.zeros(len(prompts), dtype=torch.long, device=lm.device)
        self.constraint: Constraint | None = None
        self.observers: list[Observer] = []
        self.policy: RowPolicy | None = None
        # the last target forward: tokens [B, k+1] and their logits [B, k+1, V] (position 0 is
        # the pending token, or the prompt's last token on the first step), for proposers that
        # learn from every forward (token recycling)
        self.forwarded: tuple[torch.Tensor, torch.Tensor] | None = None

    def add_rows(self, prompts: list[list[int]], generators: list[torch.Generator]) -> list[int]:
        """Rows that join the running batch (continuous batching): each prompt but its last token
        is prefilled and merged into the cache, the last token is pending, so the next step
        scores the row's first new token. Returns the new row indices. Only for plain decoding:
        proposers, constraints and row policies keep per-row state that is not extended here.
        """
        if any(len(p) < 2 for p in prompts):
            raise ValueError("a joining prompt needs at least two tokens")
        start = time.perf_counter()
        joining = Sequence(self.lm, [p[:-1] for p in prompts])
        joining.few_row_path = self.seq.few_row_path
        joining.prefill()
        self.seq.append_rows(joining)
        prefill_time = time.perf_counter() - start
        added = []
        for p, generator in zip(prompts, generators):
            row = RowState(prompt_ids=list(p), text=IncrementalText(self.lm.tokenizer, self.rows[0].text.stop))
            row.stats.prompt_tokens = len(p)
            row.stats.prefill_time = prefill_time
            row.stats.target_forwards = 1
            self.rows.append(row)
            self.groups.append(max(self.groups) + 1)
            self.generators.append(generator)
            self.active.append(len(self.rows) - 1)
            added.append(len(self.rows) - 1)
        return added

    # --- what proposers read
    def context(self, b: int) -> list[int]:
        """All token ids of active row b: prompt, accepted output, pending token."""
        row = self.rows[self.active[b]]
        return row.prompt_ids + row.output_ids

    def history(self, drafts: torch.Tensor | None = None, parents: torch.Tensor | None = None,
                ) -> TokenHistory | None:
        """Penalty histories for each active row, extended along drafts [B, k] if given.

        Rows come out as [B * (k+1)] (position-major within a row) when drafts are given;
        with `parents` the drafts are a tree and position j+1 follows node j's path.
        """
        if not self.needs_history:
            return None
        rows = [self.rows[i] for i in self.active]
        base = TokenHistory.from_ids([r.prompt_ids for r in rows], [r.output_ids for r in rows],
                                     self.lm.vocab_size, self.lm.device)
        if drafts is None:
            return base
        drafts = drafts.to(self.lm.device)
        if parents is None:
            return base.extend_along(drafts)
        on_path = torch.stack([ancestor_mask(row, drafts.device) for row in parents.tolist()])
        return base.extend_along_tree(drafts, on_path)

    def allowed(self, drafts: torch.Tensor | None = None, parents: torch.Tensor | None = None,
                ) -> torch.Tensor | None:
        """The constraint's masks along the drafts (rows as in `history`); None if unconstrained."""
        if self.constraint is None:
            return None
        return self.constraint.allowed(self, drafts, parents)

    def process(self, logits: torch.Tensor, history: TokenHistory | None,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        """Processed logits; a constraint's `allowed` mask applies first, so truncation samplers
        (top-k, top-p, ...) work on the tokens the constraint permits."""
        if allowed is not None:
            logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
        return process_logits(logits, self.config, history, self.processors)

    def uniforms(self) -> torch.Tensor:
        """One uniform per active row from that row's own generator."""
        return draw_uniforms(self.generators, self.active)

    def sample(self, processed_logits: torch.Tensor) -> torch.Tensor:
        """One token per active row from processed logits [B, V]."""
        if self.config.greedy:
            return processed_logits.argmax(-1)
        return sample_from_probs(processed_logits.softmax(-1), self.uniforms())


class SampleVerifier:
    """The verifier of plain decoding: no drafts, sample the next token from the target."""

    def verify(self, state: DecodeState, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        processed = state.process(target_logits[:, 0], state.history(), state.allowed())
        batch = target_logits.shape[0]
        return Verdict(torch.zeros(batch, dtype=torch.long), state.sample(processed), ["target"] * batch)


def run_loop(state: DecodeState, proposer: Proposer | None = None, verifier: Verifier | None = None,
             ) -> Iterator[list[StepEvent]]:
    """Run the loop to the end, yielding the events of each step.

    The first step drafts right after the prompt: the prefill's last logits score the first
    draft, and only the drafts are forwarded. Later steps forward [pending, drafts].
    """
    verifier = verifier or SampleVerifier()
    if state.policy is not None and hasattr(state.policy, "start"):
        state.policy.start(state)
    for piece in (proposer, verifier):  # e.g. ask the sequence to keep hidden states from the prefill on
        if hasattr(piece, "before_prefill"):
            piece.before_prefill(state)
    start = time.perf_counter()
    prefill_logits = state.seq.prefill()[:, None]
    prefill_time = time.perf_counter() - start
    for row in state.rows:
        row.stats.prefill_time = prefill_time
        row.stats.target_forwards = 1
    if proposer is not None:
        proposer.start(state)
    if state.constraint is not None:
        state.constraint.start(state)
    if hasattr(verifier, "start"):
        verifier.start(state)
    policy = state.policy
    first = True
    while True:
        if policy is not None and hasattr(policy, "before_step"):
            parents = policy.before_step(state)
            if parents is not None:
                reorder_rows(state, parents, proposer)
        budget = _draft_budget(state, first)
        if budget is None:
            for i in state.active:
                state.rows[i].finish_reason = "length"
            yield [StepEvent(i, [], state.rows[i].text.flush(), True) for i in state.active]
            break
        t1 = time.perf_counter()
        if proposer is not None and max(budget) > 0:
            proposal = proposer.propose(state, budget)
        else:
            proposal = Proposal.empty(len(state.active), state.lm.device)
        t2 = time.perf_counter()
        logits = _forward_proposal(state, prefill_logits if first else None, proposal)
        last = state.pending[:, None] if not first else torch.tensor(
            [[state.rows[i].prompt_ids[-1]] for i in state.active], device=state.lm.device)
        state.forwarded = (torch.cat([last, proposal.tokens.to(state.lm.device)], 1), logits)
        verdict = verifier.verify(state, logits, proposal)
        for observer in state.observers:
            if hasattr(observer, "on_step"):
                observer.on_step(state, logits, proposal, verdict)
        if policy is not None and hasattr(policy, "before_emit"):
            parents = policy.before_emit(state, logits, proposal, verdict)
            if parents is not None:
                reorder_rows(state, parents, proposer)
                logits = logits[torch.as_tensor(parents, device=logits.device)]
        t4 = time.perf_counter()
        if proposer is not None:
            proposer.accepted(state, proposal, verdict)
        if proposal.is_tree:
            # after the first step the tree forward's node 0 is the pending token
            shift = 0 if first else 1
            state.seq.keep_tree_path([list(range(shift)) + [node + shift for node in verdict.path(b)]
                                      for b in range(len(state.active))])
        elif proposal.width:
            state.seq.rollback((proposal.width - verdict.accepted).tolist())
        for i in state.active:
            stats = state.rows[i].stats
            stats.draft_time += t2 - t1
            stats.verify_time += t4 - t2
            stats.target_forwards += int(not first or proposal.width > 0)
        events = _emit(state, logits, proposal, verdict)
        yield events
        first = False
        _prune_finished(state, proposer)
        if not state.active:
            break
        # rows that joined mid-run (continuous batching) have their last prompt token pending
        state.pending = torch.tensor([(state.rows[i].output_ids or state.rows[i].prompt_ids)[-1]
                                      for i in state.active], device=state.lm.device)
    end = time.perf_counter()
    for row in state.rows:
        row.stats.wall_time = end - max(start, row.started)


def _forward_proposal(state: DecodeState, prefill_logits: torch.Tensor | None, proposal: Proposal) -> torch.Tensor:
    """Target logits [B, k+1, V] for the proposal: [pending, drafts] in one forward (a tree
    forward for token trees). Right after the prefill the pending token is already cached."""
    drafts = proposal.tokens.to(state.lm.device)
    if prefill_logits is not None:
        if not proposal.width:
            return prefill_logits
        if proposal.is_tree:
            return torch.cat([prefill_logits, state.seq.forward_tree(drafts, proposal.parents)], 1)
        return torch.cat([prefill_logits, state.seq.forward(drafts)], 1)
    tokens = torch.cat([state.pending[:, None], drafts], 1)
    if proposal.is_tree:
        parents = torch.cat([torch.full((len(drafts), 1), -1), proposal.parents.cpu() + 1], 1)
        return state.seq.forward_tree(tokens, parents)
    return state.seq.forward(tokens)


def _draft_budget(state: DecodeState, first: bool) -> list[int] | None:
    """Per active row: how many drafts fit before max_new_tokens and the context end."""
    pending = 0 if first else 1
    free = state.seq.room() - pending  # tokens the longest row's text can still take
    if free < 1:
        return None
    budget = []
    for i in state.active:
        left = state.max_new_tokens - len(state.rows[i].output_ids)
        budget.append(max(0, min(left - 1, free - 1)))
    return budget


def _emit(state: DecodeState, logits: torch.Tensor, proposal: Proposal, verdict: Verdict) -> list[StepEvent]:
    events = []
    logprobs = logits.float().log_softmax(-1) if state.keep_records else None
    eos = state.lm.eos_token_ids
    for b, i in enumerate(state.active):
        row = state.rows[i]
        if row.finish_reason is not None:  # a row policy ended it before this step's tokens
            events.append(StepEvent(i, [], row.text.flush(), True))
            continue
        path = verdict.path(b)
        accepted = len(path)
        new = proposal.tokens[b, path].tolist() + [int(verdict.next_tokens[b])]
        positions = [0] + [node + 1 for node in path]
        sources = ["draft"] * accepted + [verdict.next_source[b]]
        row.stats.verify_steps += 1
        if proposal.width:
            valid = int(proposal.lengths[b])
            depth = max(depths(proposal.row_parents(b)[:valid]), default=-1) + 1 if proposal.is_tree else None
            row.stats.record_acceptance(valid, accepted, depth)
        taken: list[int] = []
        for position, token, source in zip(positions, new, sources):
            taken.append(token)
            row.output_ids.append(token)
            if logprobs is not None:
                row.records.append(_record(state, b, logprobs[b, position], token, source))
            if state.constraint is not None and state.constraint.advance(state, b, token):
                row.finish_reason = "stop"
                break
            if token in eos:
                row.finish_reason = "stop"
                break
            if len(row.output_ids) >= state.max_new_tokens:
                row.finish_reason = "length"
                break
        row.stats.new_tokens = len(row.output_ids)
        text = row.text.add(taken)
        if row.text.stopped:
            row.finish_reason = "stop"
        if row.finish_reason is not None:
            text += row.text.flush()
        events.append(StepEvent(i, taken, text, row.finish_reason is not None))
    return events


def _record(state: DecodeState, b: int, logprobs: torch.Tensor, token: int, source: str) -> TokenRecord:
    """The default observer: token, log-probability, entropy, top alternatives, source; then the
    columns of every other observer."""
    lm = state.lm
    row_entropy = float(entropy(logprobs))
    top: list[tuple[int, str, float]] = []
    if state.top_logprobs:
        values, ids = torch.topk(logprobs, state.top_logprobs)
        top = [(int(t), lm.token_text(int(t)), float(v)) for t, v in zip(ids, values)]
    record = TokenRecord(int(token), lm.token_text(token), float(logprobs[token]), row_entropy, top, source)
    for observer in state.observers:
        record.extra.update(observer.columns(state, b, logprobs, token, source))
    return record


def reorder_rows(state: DecodeState, parents: list[int], proposer: Proposer | None = None) -> None:
    """Active row b takes the content of active row parents[b] (repeats allowed): KV cache,
    output, records, text, pending token, constraint state. Each row keeps its own random
    stream, so copies diverge afterwards."""
    parents = [int(p) for p in parents]
    if len(parents) != len(state.active) or any(not 0 <= p < len(state.active) for p in parents):
        raise ValueError("a row policy must name one parent among the active rows for each active row")
    if parents == list(range(len(state.active))):
        return
    state.seq.select_rows(parents)
    old = [state.rows[i] for i in state.active]
    for b, p in enumerate(parents):
        state.rows[state.active[b]] = _copy_row(old[p])
    state.pending = state.pending[torch.as_tensor(parents, device=state.pending.device)]
    if proposer is not None:
        proposer.select_rows(parents)
    if state.constraint is not None:
        if not hasattr(state.constraint, "reorder"):
            raise ValueError("this constraint cannot follow reordered rows")
        state.constraint.reorder(parents)


def _copy_row(row: RowState) -> RowState:
    text = copy.copy(row.text)
    text.ids = list(row.text.ids)
    return RowState(list(row.prompt_ids), list(row.output_ids), list(row.records), copy.deepcopy(row.stats),
                    row.finish_reason, text, row.started)


def _prune_finished(state: DecodeState, proposer: Proposer | None) -> None:
    keep = [b for b, i in enumerate(state.active) if state.rows[i].finish_reason is None]
    if len(keep) == len(state.active):
        return
    state.active = [state.active[b] for b in keep]
    if keep:
        state.seq.select_rows(keep)
        if proposer is not None:
            proposer.select_rows(keep)
        if state.constraint is not None:
            state.constraint.select_rows(keep)
