"""Beam search as a row policy: `num_beams` rows per prompt, reordered every step.

Beam search keeps the `num_beams` highest-scoring partial sequences (score: sum of token
log-probabilities) and extends each by every token; hypotheses that end (EOS, or the length
limit) are kept with the length-normalised score sum_logprob / length ** length_penalty
(Wu et al. 2016, "Google's Neural Machine Translation System", section 7; the normalisation
Hugging Face `generate` uses). The search follows Hugging Face's vectorised beam search
(transformers 5.x `_beam_search`): 2 x num_beams candidates per step (more with several EOS
tokens), finished hypotheses taken only from the top num_beams candidates, and the default
stopping heuristic (`early_stopping=False`: stop once the best running beam, normalised at the
current length, cannot beat the worst kept hypothesis). So `num_beams=4` gives what
`model.generate(num_beams=4, do_sample=False)` gives, token for token.

Scores use the raw log-probabilities, then the sampler's logit bias and penalties; temperature
and truncation samplers do not apply (as in Hugging Face with `do_sample=False`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..decoding.loop import _record
from ..decoding.protocols import Proposal, Verdict
from ..decoding.records import GenerationOutput, TokenRecord
from ..errors import InvalidOption

NEG = -1.0e9  # Hugging Face's "impossible" score: kept for bit-equal tie-breaking


class _Group:
    """The beam state of one prompt."""

    def __init__(self, beams: int):
        self.running = torch.zeros(beams, dtype=torch.float32)
        self.running[1:] = NEG
        self.scores = torch.full((beams,), NEG, dtype=torch.float32)  # kept hypotheses
        self.finished = torch.zeros(beams, dtype=torch.bool)
        self.hypotheses: list[tuple[list[int], list[TokenRecord]] | None] = [None] * beams
        self.improvable = True
        self.done = False


class BeamSearch:
    """Verifier and row policy of beam search (see the module docstring).

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> out = dl.generate(lm, "hello", num_beams=3, max_new_tokens=5)
        >>> len(out.results["beam"]["hypotheses"]) <= 3
        True
    """

    streams = False

    def __init__(self, num_beams: int, length_penalty: float = 1.0, early_stopping: bool = False):
        self.rows_per_prompt = num_beams
        self.beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.groups: dict[int, _Group] = {}
        self._parents: list[int] | None = None

    def start(self, state: Any) -> None:
        if any(row.text.stop for row in state.rows):
            raise InvalidOption("stop strings are not supported with beam search")
        # scores must match Hugging Face's batched forwards bit for bit
        state.seq.few_row_path = False
        self.groups = {g: _Group(self.beams) for g in sorted(set(state.groups))}
        self.processors = dataclasses.replace(state.config, temperature=0.0).processors()

    def verify(self, state: Any, target_logits: torch.Tensor, proposal: Proposal) -> Verdict:
        logprobs = raw = target_logits[:, 0].float().log_softmax(-1)
        history = state.history()
        for processor in self.processors:
            logprobs = processor(logprobs, history)
        vocab = logprobs.shape[-1]
        eos = state.lm.eos_token_ids
        keep = max(2, 1 + len(eos)) * self.beams
        parents = list(range(len(state.active)))
        tokens = torch.zeros(len(state.active), dtype=torch.long)
        for g, group in self.groups.items():
            rows = [b for b, i in enumerate(state.active) if state.groups[i] == g]
            if not rows or group.done:
                continue
            length = len(state.rows[state.active[rows[0]]].output_ids)  # tokens generated so far
            scores = (logprobs[rows] + group.running[:, None]).reshape(-1)
            top_scores, top_index = torch.topk(scores, k=min(keep, scores.numel()))
            beam, token = top_index // vocab, top_index % vocab
            at_limit = length + 1 >= state.max_new_tokens
            hits = torch.tensor([int(t) in eos for t in token.tolist()]) | at_limit
            self._keep_finished(state, group, rows, raw, top_scores, beam, token, hits, length)
            running_scores = top_scores + hits.float() * NEG
            chosen = torch.topk(running_scores, k=self.beams).indices
            group.running = running_scores[chosen]
            for slot, c in zip(rows, chosen.tolist()):
                parents[slot] = rows[int(beam[c])]
                tokens[slot] = token[c]
            normalised = group.running[0] / ((length + 1) ** self.length_penalty)
            worst = torch.where(group.finished, group.scores.min(), torch.tensor(NEG))
            group.improvable = group.improvable and bool((normalised > worst).any())
            all_kept = bool(group.finished.all()) and self.early_stopping
            if not group.improvable or all_kept or bool(hits.all()):
                group.done = True
        self._parents = parents
        batch = len(state.active)
        return Verdict(torch.zeros(batch, dtype=torch.long), tokens.to(state.lm.device), ["target"] * batch)

    def _keep_finished(self, state: Any, group: _Group, rows: list[int], logprobs: torch.Tensor,
                       top_scores: torch.Tensor, beam: torch.Tensor, token: torch.Tensor, hits: torch.Tensor,
                       length: int) -> None:
        """Merge the candidates that end here (among the top num_beams) into the kept hypotheses."""
        ends = hits.clone()
        ends[self.beams:] = False
        candidate = top_scores / ((length + 1) ** self.length_penalty)
        if bool(group.finished.all()) and self.early_stopping:
            candidate = candidate + NEG
        if not group.improvable:
            candidate = candidate + NEG
        candidate = candidate + (~ends).float() * NEG
        merged = torch.cat([group.scores, candidate])
        best = torch.topk(merged, k=self.beams).indices.tolist()
        hypotheses, scores, finished = [], [], []
        for m in best:
            if m < self.beams:
                hypotheses.append(group.hypotheses[m])
                finished.append(bool(group.finished[m]))
            else:
                c = m - self.beams
                b = rows[int(beam[c])]
                row = state.rows[state.active[b]]
                records = list(row.records)
                if state.keep_records:
                    records.append(_record(state, b, logprobs[b], int(token[c]), "target"))
                hypotheses.append((row.output_ids + [int(token[c])], records) if bool(ends[c]) else None)
                finished.append(bool(ends[c]))
            scores.append(merged[m])
        group.hypotheses = hypotheses
        group.scores = torch.stack(scores)
        group.finished = torch.tensor(finished)

    def before_emit(self, state: Any, logits: torch.Tensor, proposal: Proposal, verdict: Verdict) -> list[int]:
        parents, self._parents = self._parents, None
        for i in state.active:
            if self.groups[state.groups[i]].done:
                state.rows[i].finish_reason = "stop"
        return parents

    def outputs(self, state: Any, rows: list[GenerationOutput]) -> list[GenerationOutput]:
        outputs = []
        lm = state.lm
        for g, group in self.groups.items():
            members = [i for i, p in enumerate(state.groups) if p == g]
            kept = [(float(s), h) for s, h, f in zip(group.scores, group.hypotheses, group.finished) if f]
            base = rows[members[0]]
            if not kept:  # the length limit ended the search before any hypothesis: the best running beam
                kept = [(float(group.running[0]), (base.token_ids, base.records))]
            score, (ids, records) = kept[0]
            finish = "stop" if ids and ids[-1] in lm.eos_token_ids else "length"
            out = GenerationOutput(text=lm.decode([t for t in ids if t not in lm.eos_token_ids]), token_ids=list(ids),
                                   records=list(records), stats=base.stats, finish_reason=finish,
                                   prompt_token_ids=base.prompt_token_ids)
            out.stats.new_tokens = len(ids)
            out.results["beam"] = {"score": score, "hypotheses": [
                {"token_ids": list(h[0]), "text": lm.decode([t for t in h[0] if t not in lm.eos_token_ids]),
                 "score": s} for s, h in kept]}
            outputs.append(out)
        return outputs
