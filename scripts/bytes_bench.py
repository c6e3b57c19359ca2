"""Byte-level measurements on real models: cross-vocabulary ensembles (bits per byte),
cross-vocabulary drafting against Hugging Face's universal assisted generation, ByteLM speed.

Papers (our own code; see decodelab/bytes/):
- B. Phan, B. Amos, I. Gat, M. Havasi, M. Muckley, K. Ullrich (2024), "Exact Byte-Level
  Probabilities from Tokenized Language Models for FIM-Tasks and Model Ensembles": `ByteLM`, and
  ensembles of models with different vocabularies at the byte level (`dl.bytes.Ensemble`).
- J. Hayase, A. Liu, N. A. Smith, S. Oh (2025), "Sampling from Your Language Model One Byte at a
  Time" (ByteSampler): the same byte-level model, used for sampling and ensembles.
- N. Timor, J. Mamou, D. Korat, M. Berchansky, O. Pereg, G. Jain, R. Schwartz, M. Wasserblat,
  D. Harel (2025), "Accelerating LLM Inference with Lossless Speculative Decoding Algorithms for
  Heterogeneous Vocabularies": Hugging Face's universal assisted generation (greedy: the draft's
  text is re-tokenized, `AssistedCandidateGeneratorDifferentTokenizers`) and its sampling variant
  (`UniversalSpeculativeDecodingGenerator`, token-level intersection of the vocabularies).

Subcommands:

ensemble  bits per byte of each model alone and of `dl.bytes.Ensemble` (mixture and product,
          equal weights) on the same texts. Each model alone is reported twice: ByteLM
          (log P(text starts with these bytes), every tokenization, default pruning) and the
          canonical tokenization's token-level log-probability (one forward, the same token law
          as ByteLM: added tokens masked and the law renormalised). The mixture's next-byte laws
          multiply out to log sum_i w_i P_i(text) (checked against the members' own values,
          `mixture_identity_error`); the product of experts renormalises every byte, so its
          chain is a proper byte-level model too. ByteLM's bits/byte are at most the canonical
          ones in exact arithmetic without pruning (the canonical tokens are one of the
          tokenizations ByteLM sums over), but
          at bf16 activations (int4/int8/bf16 weights) ByteLM's cached tree forwards and the
          canonical one-shot forward round differently: on one 78-byte text, SmolLM2 int4 gave
          ByteLM 0.001 bits/byte *above* canonical, where fp32 gives 0.003 below; compare the two
          columns at fp32. Texts (`--source`, comma-separated):
            prose   message texts of the packaged suite specbench_mini whose source is "written
                    for decodelab" (decodelab/corpus/suites/SOURCES.md): held out, as they were
                    written after the models were trained; round-robin over categories.
            stdlib  top-level functions of a few standard-library modules of this interpreter
                    (`decodelab.bytes.bench.stdlib_functions`, as for the FIM table): code, and
                    almost surely in the models' training data (not held out); shuffled, seed 0.
            PATH    a text file; paragraphs (separated by blank lines) are the texts.
          Each text is cut to --max-bytes (at a character boundary).
cross     greedy: plain target decoding, `dl.spec.DraftModel(draft, k)` (cross-vocabulary when
          the tokenizers differ), HF `generate` and HF `generate(assistant_model=...,
          tokenizer=..., assistant_tokenizer=...)` (universal assisted generation), all in one
          `decodelab.bench.run_bench` run (prompt-major, rotating order, one warm-up each) on the
          same prompts of specbench_mini (round-robin over categories); whether each output
          equals plain greedy, token for token, per prompt; tokens/s and ratios to plain.
          Then (unless --sample-temperature 0) the same at that temperature, where HF selects
          `UniversalSpeculativeDecodingGenerator` (transformers' generation/utils.py:
          different tokenizers and do_sample=True; greedy takes
          `AssistedCandidateGeneratorDifferentTokenizers`). USD prunes the assistant's LM head
          and wraps its input embedding in place, so it gets its own fresh copy of the draft
          model, whose packed int4/int8 head is first replaced by a float `nn.Linear` in the
          activation dtype (HF's `prune_linear_layer` reads `.weight` and builds a float
          layer that must take the hidden states' dtype); the pruned head is float, as it
          would be for any model HF prunes.
speed     `decodelab.bytes.bench.bytelm_speed` (ByteLM scoring vs token-level scoring of the same
          texts, one run): bytes/s and model calls per byte, one text at a time after a warm-up;
          prints a Markdown row.

Models are pack names or paths, or `tiny-random[:key=value...]` for smoke runs (defaults: the
bench's vocab_size=64, init_std=0.5, context_length=8192). --weights applies to every model.

Commands for the real models (one at a time; the machine has two cores):

    flock /tmp/qwen.lock env PYTHONPATH=. python scripts/bytes_bench.py ensemble \\
        --models smollm2-135m,qwen2.5-coder-0.5b --weights int4 --source prose,stdlib \\
        --texts 12 --max-bytes 400 --out ensemble.json
    flock /tmp/qwen.lock env PYTHONPATH=. python scripts/bytes_bench.py cross \\
        --target qwen2.5-coder-1.5b --draft smollm2-135m --weights int4 --k 4 \\
        --prompts 12 --max-new-tokens 64 --sample-temperature 0.7 --out cross.json
    flock /tmp/qwen.lock env PYTHONPATH=. python scripts/bytes_bench.py speed \\
        --model qwen2.5-coder-0.5b --weights int4 --source prose --texts 8 --max-bytes 300 --out speed.json

Smoke runs (seconds; on a busy machine one torch thread is far faster for tiny models):

    PYTHONPATH=. python scripts/bytes_bench.py ensemble --models tiny-random:seed=0,tiny-random:seed=1 \\
        --source PATH --texts 2 --max-bytes 60 --threads 1
    PYTHONPATH=. python scripts/bytes_bench.py cross --target tiny-random:vocab_size=48 \\
        --draft tiny-random:vocab_size=64:seed=1 --prompts 2 --max-new-tokens 8 --threads 1
    PYTHONPATH=. python scripts/bytes_bench.py speed --model tiny-random --source PATH --texts 2 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import torch

import decodelab as dl
from decodelab.bench.cli import TINY_RANDOM_OPTIONS
from decodelab.bench.harness import BenchResult, machine_info, run_bench
from decodelab.bench.methods import make_method, parse_method_options
from decodelab.bench.report import busy_warning, json_safe, summary_table
from decodelab.bytes import ByteLM, Ensemble
from decodelab.bytes.bench import bytelm_speed, stdlib_functions
from decodelab.bytes.bytelm import MEMO_SIZE
from decodelab.corpus import Suite, load_suite
from decodelab.errors import InvalidOption, InvalidPrompt
from decodelab.sampling.options import bounded_number
from decodelab.speculative.draft_model import same_vocabulary

SUITE = "specbench_mini"
HELD_OUT = "written for decodelab"
MIN_TEXT_BYTES = 64
MAX_BYTES = MEMO_SIZE - 1  # every prefix's next-byte law stays in ByteLM's memo: the product ensemble re-reads them
LN2 = math.log(2)


# ------------------------------------------------------------------ models and texts
def load_model(spec: str, weights: str, *, fresh: bool = False) -> dl.LM:
    """A pack name or path, or `tiny-random[:key=value...]`; `fresh` skips load()'s memo."""
    name, *pairs = spec.split(":") if spec.strip().lower().startswith("tiny-random") else [spec]
    if name.strip().lower() == "tiny-random":
        return dl.load("tiny-random", weights=weights, **{**TINY_RANDOM_OPTIONS, **parse_method_options(pairs)})
    return dl.load(spec, weights=weights, cache=not fresh)


def round_robin(groups: dict[str, list[Any]]) -> list[Any]:
    """Items of every group in turn: first of each group, then second of each, ..."""
    out, lists = [], list(groups.values())
    for i in range(max((len(g) for g in lists), default=0)):
        out += [g[i] for g in lists if i < len(g)]
    return out


def source_texts(source: str, n: int, max_bytes: int, seed: int = 0) -> list[str]:
    """`n` texts of a source (see the module docstring), each cut to `max_bytes` at a character boundary."""
    if source == "prose":
        groups: dict[str, list[str]] = {}
        for prompt in load_suite(SUITE):
            if prompt.source == HELD_OUT:
                groups.setdefault(prompt.category, []).extend(m["content"] for m in prompt.messages)
        texts = list(dict.fromkeys(round_robin(groups)))
    elif source == "stdlib":
        texts = [text for _, text in stdlib_functions()]
        random.Random(seed).shuffle(texts)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidOption(f"--source: 'prose', 'stdlib' or a text file, got {source!r}")
        texts = [p.strip("\n") for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    cut = [t.encode("utf-8")[:max_bytes].decode("utf-8", "ignore") for t in texts]
    long_enough = [t for t in cut if len(t.encode("utf-8")) >= min(MIN_TEXT_BYTES, max_bytes)]
    return (long_enough or cut)[:n]


def suite_prompts(n: int) -> Suite:
    """The first `n` prompts of specbench_mini, round-robin over its categories."""
    suite = load_suite(SUITE)
    groups: dict[str, list[Any]] = {}
    for prompt in suite:
        groups.setdefault(prompt.category, []).append(prompt)
    return Suite(name=f"{SUITE} (round-robin, {n})", prompts=round_robin(groups)[:n], path=suite.path)


def progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled)


# ------------------------------------------------------------------ ensemble
def canonical_logprob(bl: ByteLM, text: str) -> float:
    """log P(the first tokens are the canonical tokenization of `text`), under ByteLM's token law
    (same context, added tokens masked, renormalised)."""
    ids = list(bl.lm.tokenizer(text, add_special_tokens=False)["input_ids"])
    tokens = torch.tensor([bl.context + ids], dtype=torch.long, device=bl.lm.device)
    with torch.inference_mode():
        logits = bl.lm.model(tokens).logits[0, len(bl.context) - 1: -1].to("cpu", torch.float64)
    logp = torch.log_softmax(logits.masked_fill(~bl.vocab.allowed, float("-inf")), -1)
    return float(logp.gather(1, torch.tensor(ids)[:, None]).sum())


def ensemble_text(members: list[ByteLM], names: list[str], text: str) -> dict[str, Any]:
    """Log-probabilities of one text under each member (ByteLM and canonical tokens), the mixture
    and the product. The mixture runs first and drives the members byte by byte; the members'
    own value then costs one byte more, and the product reads their remembered laws."""
    data = text.encode("utf-8")
    calls = [m.model_calls for m in members]
    mixture = Ensemble(members, mode="mixture").logprob(data)
    single = [m.logprob(data) for m in members]
    product = Ensemble(members, mode="product").logprob(data)
    weights = [1.0 / len(members)] * len(members)
    closed = torch.logsumexp(torch.tensor([math.log(w) + s for w, s in zip(weights, single)], dtype=torch.float64), 0)
    return {
        "bytes": len(data), "text": text[:80],
        "logprob": {**dict(zip(names, single)), "mixture": mixture, "product": product},
        "canonical_logprob": {n: canonical_logprob(m, text) for n, m in zip(names, members)},
        "mixture_identity_error": abs(mixture - float(closed)),
        "model_calls": {n: m.model_calls - c for n, m, c in zip(names, members, calls)},
    }


def run_ensemble(models: list[dl.LM], texts: list[str], *, progress: bool = True,
                 label: str = "ensemble") -> dict[str, Any]:
    """Bits per byte of each model, the mixture and the product on `texts` (byte-weighted totals)."""
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        names = [f"{n} #{i + 1}" for i, n in enumerate(names)]
    members = [ByteLM(m) for m in models]
    rows, skipped = [], []
    with progress_bar(progress) as bar:
        for text in bar.track(texts, description=label):
            try:
                rows.append(ensemble_text(members, names, text))
            except InvalidPrompt as exc:  # a byte some model cannot produce (tiny-random's alphabet)
                skipped.append({"text": text[:80], "reason": str(exc)})
    total = sum(r["bytes"] for r in rows)

    def bpb(key: str, column: str = "logprob") -> float:
        return -sum(r[column][key] for r in rows) / LN2 / total if total else float("nan")

    single = {n: bpb(n) for n in names}
    best = min(single.values(), default=float("nan"))
    summary = [{"model": n, "bits_per_byte": single[n], "canonical_bits_per_byte": bpb(n, "canonical_logprob"),
                "vs_best_single": single[n] - best} for n in names]
    summary += [{"model": f"{mode} (equal weights)", "bits_per_byte": bpb(mode), "canonical_bits_per_byte": None,
                 "vs_best_single": bpb(mode) - best} for mode in ("mixture", "product")]
    return {"texts": len(rows), "bytes": total, "summary": summary, "skipped": skipped,
            "mixture_identity_error": max((r["mixture_identity_error"] for r in rows), default=0.0),
            "model_calls_per_byte": {n: sum(r["model_calls"][n] for r in rows) / total if total else None
                                     for n in names},
            "byte_options": {"prune": members[0].prune, "max_hypotheses": members[0].max_hypotheses},
            "rows": rows}


def ensemble_table(result: dict[str, Any]) -> str:
    lines = ["| model | bits/byte (ByteLM) | bits/byte (canonical tokens) | vs best single |",
             "|---|---:|---:|---:|"]
    for row in result["summary"]:
        delta, best = row["vs_best_single"], row["bits_per_byte"] - row["vs_best_single"]
        cell = f"{delta:+.4f} ({100 * delta / best:+.1f}%)" if math.isfinite(delta) and best else "–"
        lines.append(f"| {row['model']} | {_num(row['bits_per_byte'], 4)} | {_num(row['canonical_bits_per_byte'], 4)} "
                     f"| {cell} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ cross
def float_head(lm: dl.LM) -> None:
    """Replace a packed (int4/int8) LM head by a float `nn.Linear` in the dtype of the hidden
    states it receives, so that HF's USD can prune it (see the module docstring)."""
    head = lm.model.get_output_embeddings()
    if type(head) is torch.nn.Linear:
        return
    seen: dict[str, torch.dtype] = {}

    def note_dtype(module: Any, args: tuple) -> None:
        seen["dtype"] = args[0].dtype

    hook = head.register_forward_pre_hook(note_dtype)
    try:
        with torch.inference_mode():
            lm.model(torch.tensor([[lm.pad_token_id or 0]], device=lm.device))
    finally:
        hook.remove()
    bias = getattr(head, "bias", None)
    linear = torch.nn.Linear(head.in_features, head.out_features, bias=bias is not None, dtype=seen["dtype"])
    with torch.no_grad():
        linear.weight.copy_(head.weight.to(seen["dtype"]))
        if bias is not None:
            linear.bias.copy_(bias.to(seen["dtype"]))
    linear.requires_grad_(False)
    lm.model.set_output_embeddings(linear)


def equality_rows(result: BenchResult) -> list[dict[str, Any]]:
    """Per prompt and method: whether the greedy output equals plain decoding, token for token."""
    rows: dict[str, dict[str, Any]] = {}
    for r in result.runs:
        row = rows.setdefault(r.prompt_id, {"prompt": r.prompt_id})
        if r.method != result.reference:
            row[r.method] = {"equal": r.matches_reference, "first_mismatch": r.first_mismatch,
                             "new_tokens": r.run.new_tokens}
    return list(rows.values())


def equality_table(result: BenchResult) -> str:
    methods = [m for m in result.methods if m != result.reference]
    lines = ["| prompt | " + " | ".join(f"{m} = plain" for m in methods) + " |", "|---|" + "---|" * len(methods)]
    for row in equality_rows(result):
        cells = ["yes" if row[m]["equal"] else f"no (token {row[m]['first_mismatch']})" for m in methods]
        lines.append(f"| {row['prompt']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def cross_methods(target: dl.LM, draft: dl.LM, k: int, hf_draft: dl.LM, sampling: bool = False) -> list:
    cross = not same_vocabulary(target, draft)
    hf_name = ("hf-universal-speculative" if sampling else "hf-universal-assisted") if cross else "hf-assisted"
    ours = make_method(f"draft:k={k}", target, draft=draft)
    hf_assisted = make_method("hf-assisted", target, draft=hf_draft)
    return [make_method("plain", target),
            dataclasses.replace(ours, name="decodelab-draft",
                                description=f"dl.spec.DraftModel(draft, k={k})" + (" across vocabularies" if cross else "")),
            make_method("hf", target),
            dataclasses.replace(hf_assisted, name=hf_name)]


def run_cross(target: dl.LM, draft: dl.LM, prompts: Suite, *, max_new_tokens: int, k: int = 4,
              sample_temperature: float = 0.0, usd_draft: dl.LM | None = None, seed: int = 0,
              progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Greedy (and, with sample_temperature > 0, sampling) runs of plain / our draft / HF / HF
    assisted with the draft, in one process on the same prompts. `usd_draft`: the draft copy HF's
    sampling variant may modify (default: a deep copy of `draft`)."""
    hf_draft = draft
    if draft.model is target.model:  # HF's assisted generation needs two model objects
        hf_draft = dataclasses.replace(draft, model=_copy_model(draft))
    greedy = run_bench(target, cross_methods(target, draft, k, hf_draft), prompts, max_new_tokens=max_new_tokens,
                       temperature=0.0, seed=seed, draft=draft, progress=progress, command=command)
    out: dict[str, Any] = {"cross_vocabulary": not same_vocabulary(target, draft), "k": k,
                           "greedy": greedy, "equality": equality_rows(greedy)}
    if sample_temperature > 0:
        usd = usd_draft if usd_draft is not None else dataclasses.replace(draft, model=_copy_model(draft))
        float_head(usd)
        out["sampling"] = run_bench(target, cross_methods(target, draft, k, usd, sampling=True), prompts,
                                    max_new_tokens=max_new_tokens, temperature=sample_temperature, seed=seed,
                                    draft=draft, progress=progress, command=command)
        # evidence that HF ran USD: it swaps in a pruned head when the draft has tokens the target lacks
        out["usd_draft_head"] = type(usd.model.get_output_embeddings()).__name__
    return out


def _copy_model(lm: dl.LM) -> Any:
    import copy

    return copy.deepcopy(lm.model)


def cross_report(result: dict[str, Any]) -> str:
    greedy: BenchResult = result["greedy"]
    parts = [f"cross-vocabulary: {'yes' if result['cross_vocabulary'] else 'no (same tokenizer)'}; "
             f"target {greedy.model}, draft {greedy.draft}, k={result['k']}, {greedy.settings['prompts']} prompts, "
             f"{greedy.settings['max_new_tokens']} new tokens max", "", "## Greedy", "", summary_table(greedy),
             "Equality with plain greedy, per prompt:", "", equality_table(greedy)]
    if "sampling" in result:
        sampling: BenchResult = result["sampling"]
        parts += [f"## Sampling (temperature {sampling.settings['temperature']:g}; ratios to plain sampling)", "",
                  summary_table(sampling), f"HF's draft copy ends with LM head `{result['usd_draft_head']}`"
                  + (" (HF's USD pruned it to the tokens both vocabularies share)."
                     if result["usd_draft_head"] == "_PruneReindexingLMHead" else "."), ""]
    for run in [greedy, result.get("sampling")]:
        if run is not None and busy_warning(run.machine):
            parts.append(f"**warning**: {busy_warning(run.machine)}")
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ speed
def run_speed(lm: dl.LM, texts: list[str], *, progress: bool = True, warmup: bool = True) -> dict[str, Any]:
    """`bytelm_speed` one text at a time (with a progress bar), totals recombined exactly."""
    if warmup:
        bytelm_speed(lm, [texts[0][:32]])
    per_text = []
    with progress_bar(progress) as bar:
        for text in bar.track(texts, description="ByteLM speed"):
            per_text.append(bytelm_speed(lm, [text]))
    n_bytes = sum(r["bytes"] for r in per_text)
    byte_time = sum(r["bytes"] / r["bytes_per_second"] for r in per_text)
    tokens = sum(r["bytes"] / r["bytes_per_token"] for r in per_text)
    token_time = sum(r["bytes"] / r["bytes_per_token"] / r["token_level_tokens_per_second"] for r in per_text)
    return {"model": lm.name, "weights": getattr(lm, "weights", None), "texts": len(texts), "bytes": n_bytes,
            "bytes_per_second": n_bytes / byte_time,
            "model_calls_per_byte": sum(r["model_calls_per_byte"] * r["bytes"] for r in per_text) / n_bytes,
            "tokens_forwarded_per_byte": sum(r["tokens_forwarded_per_byte"] * r["bytes"] for r in per_text) / n_bytes,
            "token_level_tokens_per_second": tokens / token_time, "bytes_per_token": n_bytes / tokens,
            "time_ratio_byte_vs_token": byte_time / token_time, "per_text": per_text}


SPEED_HEADER = ("| model | weights | texts | bytes | ByteLM bytes/s | model calls/byte | tokens forwarded/byte "
                "| token-level tokens/s | bytes/token | time ByteLM / token-level |\n"
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")


def speed_row(r: dict[str, Any]) -> str:
    return (f"| {r['model']} | {r['weights']} | {r['texts']} | {r['bytes']:.0f} | {r['bytes_per_second']:.1f} "
            f"| {r['model_calls_per_byte']:.3f} | {r['tokens_forwarded_per_byte']:.3f} "
            f"| {r['token_level_tokens_per_second']:.1f} | {r['bytes_per_token']:.2f} "
            f"| {r['time_ratio_byte_vs_token']:.2f} |\n")


# ------------------------------------------------------------------ command line
def _num(value: float | None, digits: int) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    texts = argparse.ArgumentParser(add_help=False)
    texts.add_argument("--source", default="prose", help="prose, stdlib or a text file; comma-separated (default prose)")
    texts.add_argument("--texts", type=bounded_number(int, 1, 10_000, "--texts"), default=8, help="texts per source")
    texts.add_argument("--max-bytes", type=bounded_number(int, 1, MAX_BYTES, "--max-bytes"), default=400)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--weights", default="auto", help="auto, int4, int8, bf16 or fp32 (every model)")
    common.add_argument("--threads", type=bounded_number(int, 1, 1024, "--threads"), default=None)
    common.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    common.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("ensemble", parents=[texts, common], help="bits/byte: models alone, mixture, product")
    e.add_argument("--models", required=True, help="comma-separated models (at least two)")
    c = sub.add_parser("cross", parents=[common], help="cross-vocabulary drafting vs HF universal assisted generation")
    c.add_argument("--target", required=True)
    c.add_argument("--draft", required=True)
    c.add_argument("--k", type=bounded_number(int, 1, 64, "--k"), default=4, help="draft tokens per step")
    c.add_argument("--prompts", type=bounded_number(int, 1, 1000, "--prompts"), default=12)
    c.add_argument("--max-new-tokens", type=bounded_number(int, 1, 32768, "--max-new-tokens"), default=64)
    c.add_argument("--sample-temperature", type=bounded_number(float, 0, 100, "--sample-temperature"), default=0.7,
                   help="also run at this temperature (HF: universal speculative decoding); 0: greedy only")
    c.add_argument("--seed", type=bounded_number(int, 0, 2**63 - 1, "--seed"), default=0)
    s = sub.add_parser("speed", parents=[texts, common], help="ByteLM bytes/s and model calls per byte")
    s.add_argument("--model", required=True)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one subcommand, print its Markdown, write --out; returns the results."""
    args = parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    command = "python scripts/bytes_bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    progress = not args.no_progress
    result: dict[str, Any] = {"subcommand": args.command, "weights": args.weights}
    if args.command == "ensemble":
        specs = [m for m in args.models.split(",") if m.strip()]
        if len(specs) < 2:
            raise InvalidOption("--models: at least two models, comma-separated")
        models = [load_model(m, args.weights) for m in specs]
        result["models"] = [m.name for m in models]
        result["sources"] = {}
        for source in args.source.split(","):
            texts = source_texts(source, args.texts, args.max_bytes)
            out = run_ensemble(models, texts, progress=progress, label=f"ensemble · {source}")
            result["sources"][source] = out
            skipped = f", {len(out['skipped'])} skipped (a byte some model cannot produce)" if out["skipped"] else ""
            print(f"\n## {source}: {out['texts']} texts, {out['bytes']} bytes{skipped}; mixture identity error "
                  f"{out['mixture_identity_error']:.1e} nats\n\n" + ensemble_table(out))
    elif args.command == "cross":
        target = load_model(args.target, args.weights)
        draft = load_model(args.draft, args.weights, fresh=args.draft == args.target)
        usd = load_model(args.draft, args.weights, fresh=True) if args.sample_temperature > 0 else None
        out = run_cross(target, draft, suite_prompts(args.prompts), max_new_tokens=args.max_new_tokens, k=args.k,
                        sample_temperature=args.sample_temperature, usd_draft=usd, seed=args.seed,
                        progress=progress, command=command)
        result.update(out)
        print(cross_report(out))
    else:
        lm = load_model(args.model, args.weights)
        texts = [t for source in args.source.split(",") for t in source_texts(source, args.texts, args.max_bytes)]
        result.update(run_speed(lm, texts, progress=progress))
        print(SPEED_HEADER + speed_row(result), end="")
    result["machine"] = machine_info(command)
    if args.out is not None:
        args.out.write_text(json.dumps(json_safe(result), indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    try:
        main()
    except dl.DecodelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
