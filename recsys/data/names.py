"""How a name the business wrote (a catalogue line, a blocklist entry, a pin) is compared with the
export's item names, and how it is shown when it matches none.

Two names that look the same can differ by letter case ("cena show para dos") or by Unicode form:
"í" is one character in NFC (what most keyboards and Excel write) but "i" and a combining accent
in NFD (what macOS file names and some copy-pastes give); printed, the two are the same. A name
matches an export item exactly, else every export item whose NFC-normalised, casefolded name is
the same (:func:`fold`). Accents are never stripped: "Cafe" and "Café" stay different items.
"""

from __future__ import annotations

import unicodedata


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def fold(name: str) -> str:
    """The name as compared when it matches no item exactly: NFC, casefolded, NFC again (casefolding
    can decompose, "İ" into "i" and a combining dot)."""
    return nfc(nfc(name).casefold())


def difference(written: str, found: str) -> str:
    """How ``written`` differs from ``found``, two names of the same :func:`fold`: "case",
    "Unicode form" or "case and Unicode form"."""
    case = nfc(written) != nfc(found)
    form = written.casefold() != found.casefold()
    return "case and Unicode form" if case and form else "case" if case else "Unicode form"


def shown(name: str) -> str:
    """``repr(name)``, with every combining mark written as its ``\\u`` escape, so that a name in
    another Unicode form than the export's does not print exactly like it (``repr`` already
    escapes the invisible characters: no-break and zero-width spaces)."""
    return "".join(f"\\u{ord(char):04x}" if unicodedata.combining(char) else char for char in repr(name))
