"""Transcription accuracy: WER and CER with a documented normalisation.

Both sides are normalised the same way before scoring, so a transcript is not penalised for
writing what was said in another form:

1. lowercase, Unicode NFKC; "Mr." / "Mrs." / "Dr." spelled out;
2. hyphens and slashes become spaces ("cold-hearted" → "cold hearted");
3. other punctuation is removed (apostrophes inside words are kept: "what's");
4. numbers written as digits become words ("10" → "ten", "3rd" → "third", "1,200" → "one
   thousand two hundred"), because the references in ``data/speech`` are written as spoken;
5. whitespace is collapsed.

WER is word edit distance / reference words; CER is character edit distance / reference
characters (on the normalised text, spaces included). Overall figures pool the edits of all
utterances (not a mean of ratios), as the usual corpus WER does.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import jiwer

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
]  # fmt: skip
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_to_words(n: int) -> str:
    """Cardinal English words for 0 ≤ n < 10**12 (larger numbers are spelled digit by digit)."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for size, name in ((10**9, "billion"), (10**6, "million"), (1000, "thousand")):
        if n >= size:
            if n >= size * 1000:
                break
            high, rest = divmod(n, size)
            return (
                number_to_words(high)
                + " "
                + name
                + ("" if rest == 0 else " " + number_to_words(rest))
            )
    return " ".join(_ONES[int(d)] for d in str(n))


def _ordinal(words: str) -> str:
    *head, last = words.split()
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(st|nd|rd|th)?")


def _spell(match: re.Match[str]) -> str:
    text = match.group(0)
    suffix = match.group(1)
    digits = text[: -len(suffix)] if suffix else text
    digits = digits.replace(",", "")
    if "." in digits:
        whole, frac = digits.split(".", 1)
        return f" {number_to_words(int(whole))} point {' '.join(_ONES[int(d)] for d in frac)} "
    words = number_to_words(int(digits))
    return f" {_ordinal(words) if suffix else words} "


_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\b(mrs?|dr)\.", lambda m: _TITLES[m.group(1)], text)
    text = re.sub(r"[-/–—]", " ", text)
    text = _NUMBER.sub(_spell, text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # quotes, not apostrophes in words
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(text.split())


@dataclass(frozen=True)
class Accuracy:
    reference: str
    hypothesis: str
    wer: float
    cer: float
    ref_words: int
    word_errors: int
    ref_chars: int
    char_errors: int


def score(reference: str, hypothesis: str) -> Accuracy:
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        raise ValueError("the reference transcript is empty after normalisation")
    words = jiwer.process_words(ref, hyp)
    chars = jiwer.process_characters(ref, hyp)
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    n_words, n_chars = len(ref.split()), len(ref)
    return Accuracy(
        ref,
        hyp,
        word_errors / n_words,
        char_errors / n_chars,
        n_words,
        word_errors,
        n_chars,
        char_errors,
    )


def overall(scores: Sequence[Accuracy]) -> tuple[float, float]:
    """Corpus WER and CER: total edits over total reference words/characters."""
    words = sum(s.ref_words for s in scores)
    chars = sum(s.ref_chars for s in scores)
    if not words:
        return float("nan"), float("nan")
    return sum(s.word_errors for s in scores) / words, sum(s.char_errors for s in scores) / chars


def accuracy_table(
    pairs: Iterable[tuple[str, str]] | Iterable[tuple[str, str, str]],
) -> Any:
    """One row per utterance: ``(reference, hypothesis)`` or ``(id, reference, hypothesis)``
    pairs scored with ``score``; ``df.attrs`` holds the corpus ``wer`` and ``cer``."""
    import pandas as pd

    rows = []
    scores = []
    for n, pair in enumerate(pairs):
        if len(pair) == 3:
            uid, ref, hyp = pair  # type: ignore[misc]
        elif len(pair) == 2:
            (ref, hyp), uid = pair, str(n)  # type: ignore[misc]
        else:
            raise ValueError(
                f"accuracy_table takes (reference, hypothesis) or (id, reference, hypothesis) "
                f"tuples; item {n} has {len(pair)} fields"
            )
        acc = score(ref, hyp)
        scores.append(acc)
        rows.append({"id": str(uid), **asdict(acc)})
    columns = ["id", *(f.name for f in fields(Accuracy))]
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["wer"], df.attrs["cer"] = overall(scores)
    return df
