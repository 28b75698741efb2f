"""Item titles as the model sees them: one clean line of text, or no title at all."""

from __future__ import annotations

import html
import re

SEPARATOR = "||"

_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*(\s[^<>]*)?/?>")
# Scraped product pages leak JavaScript into the title field of the 2018 dumps.
_SCRIPT = re.compile(r"\bvar\s+\w+\s*=|getTime\(\)|\bfunction\s*\(|document\.|window\.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SPACE = re.compile(r"\s+")
_PIPES = re.compile(r"\|{2,}")


def clean_title(raw: object) -> str | None:
    """Return the usable title, or None for a missing, empty or junk one.

    HTML entities are unescaped and whitespace collapsed; markup or script junk means no
    title. The answer separator ``||`` can never occur in a title, or splitting the
    model's answer would be ambiguous, so runs of pipes become one and edge pipes go.
    """
    if not isinstance(raw, str):
        return None
    text = html.unescape(html.unescape(raw))  # dumps are sometimes escaped twice
    if _TAG.search(text) or _SCRIPT.search(text):
        return None
    text = _CONTROL.sub(" ", text)
    text = _PIPES.sub("|", text)
    text = _SPACE.sub(" ", text).strip(" |")
    if not text:
        return None
    # Lone surrogates from JSON escapes cannot be written as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")
