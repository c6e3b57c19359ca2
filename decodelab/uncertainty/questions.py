"""A question set whose answers code can check, for evaluating uncertainty scores.

Four kinds, written here (no external data): arithmetic (sums and products of small numbers),
dates (days in a month, the year after, the weekday of a date computed with `datetime`), unit
conversions (metres, minutes, grams), and facts from a table in this file (capitals). Each question
has one expected answer; `is_correct` looks for it in the model's answer (numbers compared as
numbers, words case-insensitively, first number / whole-word match).

Example:
    >>> qs = questions(8, seed=0)
    >>> len(qs), is_correct(qs[0], qs[0].answer)
    (8, True)
"""

from __future__ import annotations

import datetime
import random
import re
from dataclasses import dataclass

CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
    "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra", "Brazil": "Brasilia", "Kenya": "Nairobi",
    "Norway": "Oslo", "Peru": "Lima", "Portugal": "Lisbon", "Greece": "Athens", "Poland": "Warsaw",
    "Turkey": "Ankara", "Vietnam": "Hanoi", "Chile": "Santiago", "Cuba": "Havana", "Ireland": "Dublin",
}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]  # not a leap year
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: str


def _arithmetic(rng: random.Random) -> Question:
    a, b = rng.randint(2, 60), rng.randint(2, 40)
    if rng.random() < 0.5:
        return Question("arithmetic", f"What is {a} + {b}?", str(a + b))
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return Question("arithmetic", f"What is {a} times {b}?", str(a * b))


def _date(rng: random.Random) -> Question:
    pick = rng.randint(0, 2)
    if pick == 0:
        m = rng.randrange(12)
        return Question("date", f"How many days are there in {MONTHS[m]} 2023?", str(DAYS_IN_MONTH[m]))
    if pick == 1:
        y = rng.randint(1800, 2090)
        return Question("date", f"Which year comes right after the year {y}?", str(y + 1))
    d = datetime.date(rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28))
    return Question("date", f"On which day of the week was {d.isoformat()}?", WEEKDAYS[d.weekday()])


def _units(rng: random.Random) -> Question:
    n = rng.randint(2, 30)
    unit = rng.choice([("kilometres", "metres", 1000), ("hours", "minutes", 60), ("kilograms", "grams", 1000),
                       ("minutes", "seconds", 60), ("metres", "centimetres", 100)])
    return Question("units", f"How many {unit[1]} are in {n} {unit[0]}?", str(n * unit[2]))


def _fact(rng: random.Random) -> Question:
    country = rng.choice(sorted(CAPITALS))
    return Question("fact", f"What is the capital of {country}?", CAPITALS[country])


def questions(n: int = 60, seed: int = 0) -> list[Question]:
    """n questions, the four kinds in turn, reproducible from the seed (no duplicates)."""
    rng = random.Random(seed)
    makers = [_arithmetic, _date, _units, _fact]
    out: list[Question] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        q = makers[len(out) % 4](rng)
        tries += 1
        if tries > 100 * n:
            raise ValueError(f"cannot write {n} distinct questions (the capitals table has {len(CAPITALS)} rows)")
        if q.text not in seen:
            seen.add(q.text)
            out.append(q)
    return out


def is_correct(question: Question, answer: str) -> bool:
    """Whether the answer states the expected one (the first number for numeric answers)."""
    if question.answer.isdigit():
        numbers = re.findall(r"\d[\d,]*", answer)
        return bool(numbers) and numbers[0].replace(",", "") == question.answer
    return re.search(rf"\b{re.escape(question.answer)}\b", answer, flags=re.IGNORECASE) is not None


__all__ = ["Question", "questions", "is_correct", "CAPITALS"]
