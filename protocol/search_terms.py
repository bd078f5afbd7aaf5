"""Search terms of a message text and of a query: one tokenizer for both sides.

A word matches regardless of case and accents: text is NFKD-normalised,
case-folded, stripped of the combining marks that follow a non-CJK letter
(so ``Crème brûlée`` gives ``creme`` and ``brulee``) and recomposed (NFC, so
Hangul jamo become syllables again and a kana keeps its voicing mark:
``が`` stays ``が``, half-width ``ｶﾞ`` becomes ``ガ``). Runs of letters and
digits are terms; everything else separates them.

CJK text (Han, Hiragana, Katakana, Hangul) has no spaces to split on, so a run
of CJK characters is indexed as its character bigrams *and* its single
characters; a query uses the bigrams of a run of two or more characters and
the character itself for a run of one. ``안녕하세요 여러분`` is therefore found
by ``여러분`` (``여러`` AND ``러분``) and by ``안``.

Pure and deterministic: the node hashes these terms into its index
(node/history_index.py); a client may use them to highlight hits.
"""

from __future__ import annotations

import re
import unicodedata

#: A term longer than this many characters is cut to it (index and query alike).
MAX_TERM_CHARS = 64
#: Distinct terms indexed per message (the first ones of the text).
MAX_TERMS_PER_MESSAGE = 512
#: Terms a query may have (after dropping repeats).
MAX_QUERY_TERMS = 16

_CJK_RANGES = (
    (0x1100, 0x11FF),  # Hangul Jamo
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3130, 0x318F),  # Hangul compatibility jamo
    (0x31F0, 0x31FF),  # Katakana phonetic extensions
    (0x3400, 0x4DBF),  # Han extension A
    (0x4E00, 0x9FFF),  # Han
    (0xA960, 0xA97F),  # Hangul Jamo extended A
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xD7B0, 0xD7FF),  # Hangul Jamo extended B
    (0xF900, 0xFAFF),  # Han compatibility
    (0xFF66, 0xFF9F),  # half-width Katakana (NFKD maps them, kept for safety)
    (0x20000, 0x3FFFF),  # Han extensions B-H
)


def is_cjk(char: str) -> bool:
    """Whether ``char`` is Han, Hiragana, Katakana or Hangul (indexed by bigrams)."""
    code = ord(char)
    if code < 0x1100:
        return False
    return any(low <= code <= high for low, high in _CJK_RANGES)


def normalise(text: str) -> str:
    """Case-folded, accent-free, recomposed text (see the module doc)."""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    kept: list[str] = []
    base_cjk = False
    for char in decomposed:
        if unicodedata.combining(char):
            if base_cjk:
                kept.append(char)  # a kana's voicing mark is part of the letter
            continue
        base_cjk = is_cjk(char)
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


_ASCII_WORD = re.compile(r"[a-z0-9]+")


def _runs(text: str) -> list[tuple[str, bool]]:
    """Maximal runs of letters/digits, each split into CJK and other parts."""
    if text.isascii():
        # The common case, ~10x faster: ASCII needs no decomposition, its
        # case fold is lower(), and its letters and digits are [a-z0-9].
        return [(word, False) for word in _ASCII_WORD.findall(text.lower())]
    return _unicode_runs(text)


def _unicode_runs(text: str) -> list[tuple[str, bool]]:
    runs: list[tuple[str, bool]] = []
    current: list[str] = []
    current_cjk = False
    for char in normalise(text):
        if not char.isalnum():
            if current:
                runs.append(("".join(current), current_cjk))
                current = []
            continue
        cjk = is_cjk(char)
        if current and cjk != current_cjk:
            runs.append(("".join(current), current_cjk))
            current = []
        current_cjk = cjk
        current.append(char)
    if current:
        runs.append(("".join(current), current_cjk))
    return runs


def index_terms(text: str) -> list[str]:
    """The distinct terms a message text is indexed under, in text order."""
    if text.isascii():
        # Every message is tokenized on the append path: ASCII in one pass.
        words = _ASCII_WORD.findall(text.lower())
        if words and max(map(len, words)) > MAX_TERM_CHARS:
            words = [word[:MAX_TERM_CHARS] for word in words]
        return list(dict.fromkeys(words))[:MAX_TERMS_PER_MESSAGE]
    seen: dict[str, None] = {}
    for run, cjk in _runs(text):
        if cjk:
            for i, char in enumerate(run):
                seen[char] = None
                if i + 1 < len(run):
                    seen[run[i : i + 2]] = None
        else:
            seen[run[:MAX_TERM_CHARS]] = None
        if len(seen) >= MAX_TERMS_PER_MESSAGE:
            break
    return list(seen)[:MAX_TERMS_PER_MESSAGE]


def query_terms(query: str) -> list[str]:
    """The distinct terms a query needs (all of them, AND), in query order."""
    seen: dict[str, None] = {}
    for run, cjk in _runs(query):
        if cjk and len(run) > 1:
            for i in range(len(run) - 1):
                seen[run[i : i + 2]] = None
        else:
            seen[run[:MAX_TERM_CHARS]] = None
    return list(seen)


def matches(text: str, terms: list[str]) -> bool:
    """Whether ``text`` holds every query term (checks an index hit exactly)."""
    have = set(index_terms(text))
    return all(term in have for term in terms)
