"""A character-level task suite (count, locate, spell letters) scored against tokenization features.

Uzan & Pinter (2025), "CharBench: Evaluating the Role of Tokenization in Character-Level Tasks".
Language models see tokens, not characters, so questions about the letters of a word (how many
"r" in "strawberry", where is the first "e", spell it out) test what they learnt about the spelling of
their tokens. CharBench relates accuracy to the tokenization of the word: how many tokens it takes,
and whether the letters asked about sit inside one token or across several.

Here the tasks are generated with known answers from an offline word list (lower-case words of the
Python documentation prose, `corpora.word_frequencies`, whose counts serve as a frequency proxy):

- count: "How many times does the letter "r" appear in "carrot"?" -> 2 (a letter of the word);
- locate: "At which position does the letter "o" first appear in "carrot"?" -> 5 (1-based);
- spell: "Spell "carrot" letter by letter." -> c-a-r-r-o-t (letters compared, separators free).

Each item records the features of the word's tokenization *in the question*: `word_tokens`, whether
the occurrences of the letter fall in more than one token (`letter_spans_tokens`), whether the first
occurrence starts a token (`letter_at_token_start`), and `log_frequency`. Exact: the answers and
the features. Answers are greedy, after `shots` worked examples, up to the first newline.

Example:
    >>> items = make_items(["carrot"], ["count", "locate", "spell"], seed=0)
    >>> [(i.task, i.answer) for i in items][2]
    ('spell', 'c-a-r-r-o-t')
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidOption
from ..sampling.options import check_options
from .answers import answer_prompts, first_integer
from .corpora import word_frequencies
from .options import CharbenchOptions

TASKS = ("count", "locate", "spell")
SHOT_WORDS = ("carrot", "banana", "letter", "window", "pepper", "summit", "balloon", "giraffe")


@dataclass
class Item:
    """One question with its known answer and (once scored) the model's output and features."""

    task: str
    word: str
    letter: str
    answer: str
    features: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    correct: bool = False

    def question(self) -> str:
        if self.task == "count":
            return f'Q: How many times does the letter "{self.letter}" appear in "{self.word}"?\nA:'
        if self.task == "locate":
            return f'Q: At which position does the letter "{self.letter}" first appear in "{self.word}"?\nA:'
        return f'Q: Spell "{self.word}" letter by letter.\nA:'

    def check(self, output: str) -> bool:
        if self.task == "spell":
            return re.sub(r"[^a-z]", "", output.lower()) == self.word
        return first_integer(output) == int(self.answer)


def make_items(words: list[str], tasks: list[str] | tuple[str, ...], seed: int = 0) -> list[Item]:
    """Every task for every word; the letter asked about is a seeded choice among the word's letters."""
    rng = random.Random(seed)
    items = []
    for word in words:
        for task in tasks:
            letter = rng.choice(sorted(set(word)))
            if task == "count":
                answer = str(word.count(letter))
            elif task == "locate":
                answer = str(word.index(letter) + 1)
            else:
                letter, answer = "", "-".join(word)
            items.append(Item(task, word, letter, answer))
    return items


def token_features(tokenizer: Any, prompt: str, item: Item) -> dict[str, Any]:
    """Tokenization features of the item's word as it appears in the final question of `prompt`."""
    start = prompt.rindex(f'"{item.word}"') + 1
    end = start + len(item.word)
    offsets = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    spans = [(a, b) for a, b in offsets if a < end and b > start]
    features: dict[str, Any] = {"word_tokens": len(spans)}
    if item.letter:
        where = [start + i for i, c in enumerate(item.word) if c == item.letter]
        holding = {next(k for k, (a, b) in enumerate(spans) if a <= w < b) for w in where}
        features["letter_spans_tokens"] = len(holding) > 1
        features["letter_at_token_start"] = any(a == where[0] for a, _ in spans)
    return features


@dataclass
class CharbenchReport:
    """Accuracy per task and per tokenization feature bucket, with per-item rows."""

    model: str
    options: dict[str, Any]
    items: list[Item]

    def accuracy(self, task: str | None = None) -> float:
        chosen = [i for i in self.items if task is None or i.task == task]
        return sum(i.correct for i in chosen) / max(len(chosen), 1)

    def majority_baseline(self, task: str) -> float:
        """Accuracy of always giving the task's most common answer (a model that answers "1" to every
        count question scores this much without reading the word)."""
        answers = [i.answer for i in self.items if i.task == task]
        return max(answers.count(a) for a in set(answers)) / len(answers) if answers else 0.0

    def by_feature(self) -> list[dict[str, Any]]:
        """Rows (task, feature, bucket, n, accuracy) for tokens per word, letter spanning tokens,
        letter at a token start and word-frequency terciles."""
        freqs = sorted(i.features["log_frequency"] for i in self.items)
        cuts = [freqs[len(freqs) // 3], freqs[2 * len(freqs) // 3]] if freqs else [0, 0]
        groups: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
        for i in self.items:
            f = i.features
            groups[(i.task, "word_tokens", str(min(f["word_tokens"], 4)) + ("+" if f["word_tokens"] >= 4 else ""))].append(i.correct)
            tercile = "low" if f["log_frequency"] < cuts[0] else "mid" if f["log_frequency"] < cuts[1] else "high"
            groups[(i.task, "frequency", tercile)].append(i.correct)
            for name in ("letter_spans_tokens", "letter_at_token_start"):
                if name in f:
                    groups[(i.task, name, str(f[name]).lower())].append(i.correct)
        return [{"task": t, "feature": name, "bucket": b, "n": len(v), "accuracy": sum(v) / len(v)}
                for (t, name, b), v in sorted(groups.items())]

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "options": self.options,
                "accuracy": {t: self.accuracy(t) for t in dict.fromkeys(i.task for i in self.items)},
                "majority_baseline": {t: self.majority_baseline(t) for t in dict.fromkeys(i.task for i in self.items)},
                "by_feature": self.by_feature(),
                "items": [{"task": i.task, "word": i.word, "letter": i.letter, "answer": i.answer, "output": i.output,
                           "correct": i.correct, **i.features} for i in self.items]}

    def table(self) -> str:
        lines = ["| task | feature | bucket | n | accuracy |", "|---|---|---|---|---|"]
        for task in dict.fromkeys(i.task for i in self.items):
            n = sum(i.task == task for i in self.items)
            lines.append(f"| {task} | all | all | {n} | {self.accuracy(task):.3f} |")
            lines.append(f"| {task} | majority-answer baseline | all | {n} | {self.majority_baseline(task):.3f} |")
        lines += [f"| {r['task']} | {r['feature']} | {r['bucket']} | {r['n']} | {r['accuracy']:.3f} |"
                  for r in self.by_feature()]
        return "\n".join(lines)


def _tasks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(t not in TASKS for t in names):
        raise InvalidOption(f"tasks must be a comma-separated list of {', '.join(TASKS)}, got {text!r}", param="tasks")
    return list(dict.fromkeys(names))


def charbench(lm: Any, *, progress: bool = True, **options: Any) -> CharbenchReport:
    """Score `lm` on generated count/locate/spell questions and record the tokenization features.

    Options (CharbenchOptions): num_words, tasks, min_length, max_length, shots, seed, batch_size.

    Example:
        >>> import decodelab as dl
        >>> lm = dl.load("tiny-random", vocab_size=64)
        >>> report = dl.tokenizer.charbench(lm, num_words=2, tasks="count", progress=False)
        >>> len(report.items)
        2
    """
    opts = check_options(CharbenchOptions, options, "tokenizer charbench")
    tasks = _tasks(opts.tasks)
    if opts.min_length > opts.max_length:
        raise InvalidOption(f"min_length ({opts.min_length}) is larger than max_length ({opts.max_length})",
                            param="min_length")
    counts = {w: c for w, c in word_frequencies(opts.min_length, opts.max_length).items()
              if c >= 2 and w not in SHOT_WORDS}
    if len(counts) < opts.num_words:
        raise InvalidOption(f"the word list has {len(counts)} words of {opts.min_length} to {opts.max_length} letters; "
                            f"num_words is {opts.num_words}", param="num_words")
    words = random.Random(opts.seed).sample(sorted(counts), opts.num_words)
    items = make_items(words, tasks, seed=opts.seed)
    examples = {t: make_items(list(SHOT_WORDS[:opts.shots]), [t], seed=opts.seed + 1) for t in tasks}
    prompts = []
    for item in items:
        prefix = "".join(f"{e.question()} {e.answer}\n\n" for e in examples[item.task])
        prompt = prefix + item.question()
        prompts.append(prompt)
        item.features = {**token_features(lm.tokenizer, prompt, item), "log_frequency": math.log(counts[item.word])}
    longest = 2 * opts.max_length + 4
    for task in tasks:
        chosen = [k for k, i in enumerate(items) if i.task == task]
        outs = answer_prompts(lm, [prompts[k] for k in chosen], max_new_tokens=longest if task == "spell" else 4,
                              batch_size=opts.batch_size, label=f"charbench {task}" if progress else None)
        for k, out in zip(chosen, outs):
            items[k].output, items[k].correct = out, items[k].check(out)
    return CharbenchReport(getattr(lm, "name", "model"), vars(opts), items)


__all__ = ["charbench", "CharbenchReport", "Item", "make_items", "token_features", "TASKS"]
