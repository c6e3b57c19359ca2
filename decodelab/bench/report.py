"""Bench reports: `results.json` (everything), `results.md` (tables) and `results.png` (plot)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .harness import BenchResult, Summary


def write_report(result: BenchResult, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, results.md and results.png into out_dir; returns their paths.

    Example:
        >>> paths = write_report(result, "bench-out/run1")   # doctest: +SKIP
        >>> sorted(paths)
        ['json', 'markdown', 'png']
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(json_safe(result.as_dict()), indent=1) + "\n", encoding="utf-8")
    paths["markdown"].write_text(to_markdown(result), encoding="utf-8")
    plot(result, paths["png"])
    return paths


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write null for them (results with `as_dict` become their dict)."""
    if hasattr(value, "as_dict"):
        return json_safe(value.as_dict())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}{suffix}"


def _mismatch_cell(summary: Summary, result: BenchResult) -> str:
    if summary.mismatches is None:
        return "–"
    if summary.method == result.reference:
        return "(reference)"
    lossy = not result.method_info.get(summary.method, {}).get("lossless", True)
    return f"{summary.mismatches}/{summary.prompts}" + (" (lossy)" if lossy else "")


def to_markdown(result: BenchResult) -> str:
    """The Markdown report: settings, the main table, a per-category table, memory."""
    s = result.settings
    m = result.machine
    lines = [
        f"# decodelab bench: {result.model}",
        "",
        f"- suite: `{result.suite}`, {s['prompts']} prompts, {s['max_new_tokens']} new tokens max, "
        f"temperature {s['temperature']:g}, seed {s['seed']}",
        f"- draft: {result.draft or '–'}; method options: {s.get('method_options') or '–'}",
        f"- machine: {m.get('cpu')}, {m.get('torch_threads')} torch threads, torch {m.get('torch')}, "
        f"transformers {m.get('transformers')}; {m.get('date')}",
        f"- command: `{m.get('command')}`",
        *([f"- **warning**: {busy_warning(m)}"] if busy_warning(m) else []),
        *([f"- skipped (longer than the context): {', '.join(x['prompt_id'] for x in result.skipped)}"]
          if result.skipped else []),
        "",
        "Speedups are ratios of end-to-end tokens/s (encoding and prefill included), measured in the same "
        "process with prompt-major, rotating order. ms/token is end to end; decode ms/token leaves out the "
        "time to the end of the first target forward (prefill) and a draft model's own prefill when it runs "
        "after it. Mean accepted = tokens per verify step "
        "(per target forward for HF methods), bonus token included."
        + (f" Mismatches: greedy outputs that differ from `{result.reference}` token for token."
           if result.reference else ""),
        "",
        "| method | ms/token | tok/s | decode ms/token | vs plain | vs HF generate | forwards/token | "
        "mean accepted | mismatches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in result.methods:
        x = result.summary[name]
        lines.append(
            f"| {name} | {_num(x.ms_per_token, 1)} | {_num(x.tokens_per_second, 1)} | {_num(x.decode_ms_per_token, 1)} "
            f"| {_num(x.speedup_vs_plain, 2, '×')} | {_num(x.speedup_vs_hf, 2, '×')} | {_num(x.forwards_per_token, 2)} "
            f"| {_num(x.mean_accepted_length, 2)} | {_mismatch_cell(x, result)} |"
        )
    baseline, label = _baseline(result)
    if baseline is not None:
        lines += ["", f"## Speedup {label} by category", "",
                  "| category | " + " | ".join(result.methods) + " |",
                  "|---|" + "---:|" * len(result.methods)]
        for category, per in result.by_category.items():
            cells = [_num(getattr(per[n], baseline), 2, "×") if n in per else "–" for n in result.methods]
            prompts = next(iter(per.values())).prompts if per else 0
            lines.append(f"| {category} ({prompts}) | " + " | ".join(cells) + " |")
    with_acceptance = [n for n in result.methods if result.summary[n].acceptance_by_position]
    if with_acceptance:
        width = max(len(result.summary[n].acceptance_by_position) for n in with_acceptance)
        shown = min(width, 12)
        lines += ["", "## Acceptance by draft position (accepted / proposed)", "",
                  "| method | " + " | ".join(str(j + 1) for j in range(shown)) + " |",
                  "|---|" + "---:|" * shown]
        for n in with_acceptance:
            rates = result.summary[n].acceptance_by_position
            lines.append(f"| {n} | " + " | ".join(_num(rates[j], 2) if j < len(rates) else "–"
                                                  for j in range(shown)) + " |")
    if result.memory:
        lines += ["", "## Memory", "",
                  "Process peak RSS after each method's first run. The peak is per process and only grows, so a "
                  "method's figure includes everything that ran before it (models loaded, earlier methods).", "",
                  "| method | peak RSS (MB) | RSS now (MB) |", "|---|---:|---:|"]
        for n in result.methods:
            mem = result.memory.get(n, {})
            lines.append(f"| {n} | {_num(mem.get('peak_rss_mb'), 0)} | {_num(mem.get('rss_mb'), 0)} |")
    return "\n".join(lines) + "\n"


def busy_warning(machine: dict[str, Any]) -> str:
    """A warning when the load average exceeded the CPU count during the run, else ''."""
    load = machine.get("load_average") or {}
    worst = max((v for v in load.values() if v is not None), default=None)
    cpus = machine.get("cpu_count") or 1
    if worst is None or worst <= cpus:
        return ""
    return (f"the machine was busy (1-minute load average up to {worst:.1f} on {cpus} CPUs): "
            "timings and ratios are noisy")


def summary_table(result: BenchResult) -> str:
    """Just the main Markdown table (what the CLI prints)."""
    text = to_markdown(result)
    start = text.index("| method | ms/token")
    end = text.find("\n\n", start)
    return text[start:end if end != -1 else None].rstrip() + "\n"


def _baseline(result: BenchResult) -> tuple[str | None, str]:
    if "hf" in result.methods:
        return "speedup_vs_hf", "vs HF generate"
    if "plain" in result.methods:
        return "speedup_vs_plain", "vs plain"
    return None, ""


def plot(result: BenchResult, path: str | Path) -> Path:
    """Bar chart of speedup per method grouped by category (+ an acceptance-by-position panel)."""
    # A bare Figure renders with the Agg canvas and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    baseline, label = _baseline(result)
    with_acceptance = [n for n in result.methods if result.summary[n].acceptance_by_position]
    panels = 2 if with_acceptance else 1
    fig = Figure(figsize=(11 if panels == 2 else 8.5, 5.4))
    axes = fig.subplots(1, panels, gridspec_kw={"width_ratios": [3, 1.3]} if panels == 2 else None, squeeze=False)
    ax = axes[0][0]
    groups = list(result.by_category) + ["all"]
    tables = [result.by_category[c] for c in result.by_category] + [result.summary]
    methods = result.methods
    width = 0.8 / max(len(methods), 1)
    if baseline is None:
        # No baseline method: plot tokens/s instead of ratios.
        attr, ylabel = "tokens_per_second", "tokens / s (end to end)"
    else:
        attr, ylabel = baseline, f"speedup {label} (tokens/s ratio)"
    for k, name in enumerate(methods):
        xs = [g + (k - (len(methods) - 1) / 2) * width for g in range(len(groups))]
        ys = [float(getattr(t[name], attr) or 0.0) if name in t else 0.0 for t in tables]
        ax.bar(xs, ys, width=width * 0.95, label=name)
    if baseline is not None:
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    s = result.settings
    ax.set_title(f"{_short(result.model)} · {result.suite} · {s['prompts']} prompts · "
                 f"{s['max_new_tokens']} tokens · T={s['temperature']:g}", fontsize=10)
    # below the plot, so that the legend never hides the bars
    ax.legend(fontsize=8, ncol=min(len(methods), 3), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    if with_acceptance:
        ax2 = axes[0][1]
        for name in with_acceptance:
            rates = result.summary[name].acceptance_by_position
            ax2.plot(range(1, len(rates) + 1), rates, marker="o", label=name)
        ax2.set_xlabel("draft position")
        ax2.set_ylabel("acceptance rate")
        ax2.set_ylim(0, 1.05)
        ax2.set_title("acceptance by position", fontsize=10)
        ax2.legend(fontsize=8)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


def _short(name: str, limit: int = 40) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]
