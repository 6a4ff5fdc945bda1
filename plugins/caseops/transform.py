"""The CaseOps text transform (``caseops_v1``) and its per-token original-byte counter.

``encode`` rewrites every maximal run of ASCII letters that holds a capital, so a tokenizer sees
lower case only, and marks the case with four private-use operators:

* ``TITLE`` (U+E001) + lower word: ``Launch`` -> ``\\uE001launch``;
* ``ALLCAPS`` (U+E002) + lower word, for two letters or more: ``NASA`` -> ``\\uE002nasa``;
* anything else: ``TITLE`` if the first letter is a capital, then ``CAPNEXT`` (U+E003) before each
  later capital: ``iPhone`` -> ``i\\uE003phone``, ``McDonald`` -> ``\\uE001mc\\uE003donald``;
* a literal operator character in the text is escaped: ``ESC`` (U+E004) + the character.

Lower-case words, non-ASCII letters, digits and everything else pass through, so ``decode`` inverts
it exactly. This is ``encode_lossless_caps_v2`` of PR #1729 (alias ``lossless_caps_caseops_v1``);
the decoder accepts exactly the streams that PR's decoder accepts (including upper-case ASCII
letters, which a tokenizer's NFKC normalizer can produce from full-width ones) and raises
:class:`CaseOpsError` where it raises.

``original_byte_counts`` is the sidecar rule of the records (``surface_piece_original_byte_counts``
in PR #1855's ``lossless_caps.py``): each token's surface, the span of transformed text it covers,
is charged the UTF-8 bytes those characters had before the transform, i.e. operators 0, an escaped
operator 3, a letter 1, anything else its UTF-8 length. Text the tokenizer drops (whitespace at a
document's edges) belongs to no surface and is not charged.

Pure Python and numpy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

TITLE = "\ue001"
ALLCAPS = "\ue002"
CAPNEXT = "\ue003"
ESC = "\ue004"
OPERATORS = (TITLE, ALLCAPS, CAPNEXT, ESC)

# What the encoder must touch: a capital with the rest of its letter run, or a literal operator
# with the letter run right after it. Lower-case text never matches, so the regex engine copies it.
_TRIGGER_RE = re.compile(r"[A-Z\ue001-\ue004][A-Za-z]*")
_CAPITAL_RE = re.compile(r"[A-Z]")
_OPERATOR_SPLIT_RE = re.compile(r"([\ue001-\ue004])")
_LEADING_LETTERS_RE = re.compile(r"[A-Za-z]*")
_ESCAPED_RE = re.compile(r"\ue004(.)", re.DOTALL)


class CaseOpsError(ValueError):
    """A string that is not a well-formed CaseOps stream (a marker without its letter, a dangling escape)."""


def _is_letter(ch: str) -> bool:
    return "a" <= ch <= "z" or "A" <= ch <= "Z"


def _capnext(m: re.Match[str]) -> str:
    return CAPNEXT + m.group().lower()


def _encode_run(word: str) -> str:
    """One whole maximal ASCII letter run (possibly empty or all lower case)."""
    if not word or word.islower():
        return word
    lower = word.lower()
    if len(word) >= 2 and word.isupper():
        return ALLCAPS + lower
    if word[0].isupper() and word[1:].islower():
        return TITLE + lower
    # Mixed case (and a lone capital, where TITLE + letter is what the rule above would give too).
    head = TITLE + lower[0] if word[0].isupper() else word[0]
    return head + _CAPITAL_RE.sub(_capnext, word[1:])


def _encode_match(m: re.Match[str]) -> str:
    s = m.group()
    if s[0] in OPERATORS:
        return ESC + s[0] + _encode_run(s[1:])
    start = m.start()
    if start and _is_letter(m.string[start - 1]):
        # A capital inside a run whose lower-case head was copied: a mixed-case word, so every
        # capital of the remainder gets CAPNEXT.
        return _CAPITAL_RE.sub(_capnext, s)
    return _encode_run(s)


def encode(text: str) -> str:
    """``text`` with its ASCII capitals replaced by case operators (see the module docstring)."""
    return _TRIGGER_RE.sub(_encode_match, text)


def decode(text: str) -> str:
    """Invert :func:`encode`; raise :class:`CaseOpsError` on a malformed stream."""
    out: list[str] = []
    mode = ""  # "", TITLE or ALLCAPS: a word operator waiting for its word
    capnext = False  # a CAPNEXT waiting for its letter
    in_word = False  # the last character copied was an ASCII letter
    allcaps = False  # inside a word opened by ALLCAPS
    escape = False  # an ESC waiting for its character
    # Odd parts are single operator characters, even parts the (possibly empty) text between them.
    for i, part in enumerate(_OPERATOR_SPLIT_RE.split(text)):
        if i % 2:
            if escape:  # a literal operator character
                if mode:
                    raise CaseOpsError("an escaped character cannot carry a word operator")
                out.append(part)
                escape = in_word = allcaps = False
            elif part == ESC:
                escape = True
            elif part == CAPNEXT:
                if capnext:
                    raise CaseOpsError("two CAPNEXT operators in a row")
                capnext = True
            else:
                if mode or in_word or capnext:
                    raise CaseOpsError("a TITLE or ALLCAPS operator out of place (inside a word or after another operator)")
                mode = part
            continue
        if not part:
            continue
        if escape:
            # PR #1729's decoder fails later on an escaped letter under a word operator; failing
            # here is the same verdict.
            if mode:
                raise CaseOpsError("an escaped character cannot carry a word operator")
            ch, part = part[0], part[1:]
            out.append(ch)
            escape = False
            if _is_letter(ch):
                in_word = True
            else:
                in_word = allcaps = False
            if not part:
                continue
        lead = _LEADING_LETTERS_RE.match(part).end()
        if lead:
            # A pending word operator implies a word start: operators need one, escapes refuse one.
            first, rest = part[0], part[1:lead]
            if not in_word:
                allcaps = mode == ALLCAPS
                up = bool(mode) or capnext
            else:
                up = allcaps or capnext
            out.append(first.upper() if up else first)
            out.append(rest.upper() if allcaps else rest)
            mode, capnext, in_word = "", False, True
            if lead == len(part):
                continue
            part = part[lead:]
        # part starts with a character that is neither a letter nor an operator.
        if mode or capnext:
            raise CaseOpsError("a case operator not followed by an ASCII letter")
        out.append(part)
        in_word = _is_letter(part[-1])
        allcaps = False
    if escape:
        raise CaseOpsError("a dangling escape operator at the end of the text")
    if mode or capnext:
        raise CaseOpsError("a case operator at the end of the text")
    return "".join(out)


def char_original_bytes(text: str) -> np.ndarray:
    """Per character of a CaseOps stream, the UTF-8 bytes it stands for in the original text (int64)."""
    cp = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    nbytes = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
    operator = (cp >= 0xE001) & (cp <= 0xE004)
    # Escapes pair up left to right, exactly as a decoder reads them; the escaped character is literal.
    literal = [m.start(1) for m in _ESCAPED_RE.finditer(text)]
    operator[literal] = False
    nbytes[operator] = 0
    return nbytes


def original_byte_counts(surfaces: Iterable[str]) -> list[int]:
    """Original UTF-8 bytes of each token, from the exact transformed text each token covers.

    ``surfaces`` are the tokens' spans of the transformed text in order (SentencePiece's
    ``piece.surface``; the empty string for the continuation bytes of a byte-fallback character).
    Raises :class:`CaseOpsError` if their concatenation is not a well-formed CaseOps stream.
    """
    surfaces = list(surfaces)
    joined = "".join(surfaces)
    decode(joined)  # the records' counter validates the stream as it walks it
    per_char = char_original_bytes(joined)
    bounds = np.cumsum([0] + [len(s) for s in surfaces])
    totals = np.concatenate([[0], np.cumsum(per_char)])
    return (totals[bounds[1:]] - totals[bounds[:-1]]).tolist()
