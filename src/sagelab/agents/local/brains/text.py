"""Text helpers for brains: transcript normalisation and sentence cutting.

Speech-to-text writes the same words many ways ("Record #5.", "record five", "Record 5"), so
intent patterns are matched against one normal form rather than each author guessing them all.
"""

from __future__ import annotations

import re
import unicodedata

_UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
_TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_SCALES = {"thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}

# A word (letters or digits, with apostrophes inside: "what's") or a decimal number; anything
# else (punctuation, symbols, hyphens) separates tokens and is dropped.
_TOKEN = re.compile(r"\d+(?:\.\d+)?|[^\W_]+(?:'[^\W_]+)*")
_THOUSANDS_SEPARATOR = re.compile(r"(?<=\d),(?=\d{3}\b)")
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+")


def normalise_transcript(text: str) -> str:
    """The form intent patterns are matched against.

    Lowercase; punctuation and symbols removed (apostrophes inside words and decimal points
    kept, "1,000" becomes "1000"); whitespace collapsed; spelled-out cardinal numbers become
    digits ("record number five" → "record number 5", "twenty-one" → "21", "one hundred and
    five" → "105"). Adjacent numbers that cannot form one ("five five") stay separate
    ("5 5"). Ordinals ("first"), "oh" for zero and decimals in words ("three point five") are
    left as words, since reading them as numbers guesses wrong as often as right.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("\u2019", "'")
    text = _THOUSANDS_SEPARATOR.sub("", text)
    return " ".join(_numbers_to_digits(_TOKEN.findall(text)))


def split_sentences(text: str) -> list[str]:
    """Cut ``text`` after each sentence end; the pieces concatenate back to ``text``.

    The whitespace after a sentence stays with it, so a consumer that joins pieces gets the
    original spacing, and "3.5" or "e.g.x" (no space after the dot) are not cut.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


class _Number:
    """A spelled-out cardinal being read word by word; ``accepts`` says if a word extends it."""

    def __init__(self) -> None:
        self.total = 0  # completed thousands/millions
        self.group = 0  # the part below the last scale word
        self.last = ""  # kind of the last word: unit, teen, tens, hundred, scale, and
        self.scale = 0  # the last scale used, so "thousand million" is not one number
        self.words = 0

    def accepts(self, word: str, following: str | None) -> bool:
        if word in _UNITS:
            # "zero" alone only: "twenty zero" is two numbers, not 20.
            return self.last in ("", "tens", "hundred", "scale", "and") and (
                word != "zero" or self.last == ""
            )
        if word in _TEENS:
            return self.last in ("", "hundred", "scale", "and")
        if word in _TENS:
            return self.last in ("", "hundred", "scale", "and")
        if word == "hundred":
            return self.last in ("", "unit", "teen", "tens") and self.group % 100 == self.group
        if word in _SCALES:
            value = _SCALES[word]
            return self.last in ("unit", "teen", "tens", "hundred") and (
                self.scale == 0 or value < self.scale
            )
        if word == "and":
            return (
                self.last in ("hundred", "scale")
                and following is not None
                and (following in _UNITS or following in _TEENS or following in _TENS)
            )
        return False

    def add(self, word: str) -> None:
        self.words += 1
        if word in _UNITS:
            self.group += _UNITS[word]
            self.last = "unit"
        elif word in _TEENS:
            self.group += _TEENS[word]
            self.last = "teen"
        elif word in _TENS:
            self.group += _TENS[word]
            self.last = "tens"
        elif word == "hundred":
            self.group = (self.group or 1) * 100
            self.last = "hundred"
        elif word in _SCALES:
            self.scale = _SCALES[word]
            self.total += self.group * self.scale
            self.group = 0
            self.last = "scale"
        else:  # "and"
            self.last = "and"

    @property
    def value(self) -> int:
        return self.total + self.group


def _numbers_to_digits(tokens: list[str]) -> list[str]:
    out: list[str] = []
    number: _Number | None = None
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if number is not None and number.accepts(token, following):
            number.add(token)
            continue
        if number is not None:
            out.append(str(number.value))
            number = None
        starter = _Number()
        if token != "and" and starter.accepts(token, following):
            starter.add(token)
            number = starter
        else:
            out.append(token)
    if number is not None:
        out.append(str(number.value))
    return out
