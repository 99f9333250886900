"""Report cleaning and sentence splitting as GLoRIA, MGCA, AFLoc and CARZero do it, and report-section choice.

The shared recipe (`create_path_2_sent_mapping` in those repositories):
1. newlines -> spaces; split on the regex `[0-9]+\\.` (numbered lists; it also cuts decimals: "4.5 cm" -> "4",
   "5 cm"), then split every piece on ".";
2. per piece: skip if empty; replace "\\ufffd\\ufffd" with a space; lowercase; tokens = `\\w+` runs (NLTK
   `RegexpTokenizer(r"\\w+")`, Unicode-aware); drop the piece if it has <= 1 token (counted *before* the ASCII
   filter); remove non-ASCII characters inside each token, dropping tokens left empty; join with spaces;
3. GLoRIA/AFLoc/CARZero only: stop adding sentences once the running word count equals exactly
   `stop_at_word_count` (5; `captions_per_image` reused as a word cap). MGCA has no such stop.
"""

from __future__ import annotations

import math
import re

_NUMBERED = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")

SECTION_CHOICES = ("findings", "impression", "longest", "impression_findings", "findings_else_impression")


def split_pieces(text: str) -> list[str]:
    """Raw sentence pieces: newlines to spaces, split on numbered-list markers, then on '.'."""
    text = text.replace("\n", " ")
    return [sent for point in _NUMBERED.split(text) for sent in point.split(".")]


def clean_piece(piece: str) -> list[str] | None:
    """Tokens of one piece (lowercase, \\w+, ASCII only), or None when the piece is dropped (<= 1 token)."""
    if len(piece) == 0:
        return None
    piece = piece.replace("\ufffd\ufffd", " ")
    tokens = _WORD.findall(piece.lower())
    if len(tokens) <= 1:
        return None
    kept = [t.encode("ascii", "ignore").decode("ascii") for t in tokens]
    return [t for t in kept if t]


def clean_report(text: str, stop_at_word_count: int | None = None) -> list[str]:
    """Cleaned sentences of a report (each a space-joined token string).

    stop_at_word_count=5 reproduces GLoRIA/AFLoc/CARZero's early stop (the running word count equal to exactly
    5 ends the report, e.g. a first sentence of 5 words is all that is kept); None (MGCA) keeps everything.
    """
    sentences: list[str] = []
    count = 0
    for piece in split_pieces(text):
        tokens = clean_piece(piece)
        if tokens is None:
            continue
        if tokens:
            sentences.append(" ".join(tokens))
        count += len(tokens)
        if stop_at_word_count is not None and count == stop_at_word_count:
            break
    return sentences


def count_words(sentences: list[str]) -> int:
    """Total tokens of cleaned sentences (MGCA keeps a report only when this is >= 3)."""
    return sum(len(s.split()) for s in sentences)


def clean_prompt(text: str) -> str:
    """Inference-time prompt cleaning (AFLoc `process_text`, CARZero): cleaned sentences joined by a space.

    A one-word prompt ("Nodule") cleans to "" (it tokenises to [CLS] [SEP]), as in the official code.
    """
    return " ".join(clean_report(text))


def _present(x: object) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    s = str(x)
    return s if s.strip() else None


def choose_section(findings: object, impression: object, how: str = "findings_else_impression") -> str | None:
    """The report text to use from the FINDINGS and IMPRESSION sections (None/NaN/blank = missing).

    "findings" / "impression": that section only; "longest": the longer one (CXR-CLIP retrieval and OpenI,
    by character length); "impression_findings": impression + " " + findings with a missing section as " "
    (MGCA); "findings_else_impression": findings when present, else impression. None when nothing is left.
    """
    f, i = _present(findings), _present(impression)
    if how == "findings":
        return f
    if how == "impression":
        return i
    if how == "longest":
        if f is None or i is None:
            return f or i
        return f if len(f) >= len(i) else i
    if how == "impression_findings":
        if f is None and i is None:
            return None
        return (i if i is not None else " ") + " " + (f if f is not None else " ")
    if how == "findings_else_impression":
        return f if f is not None else i
    raise ValueError(f"how must be one of {SECTION_CHOICES}, got '{how}'")
