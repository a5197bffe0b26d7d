"""Families of items: the denominations and variants of one brand ("Bono virtual Crepes&Waffles
10/20/30") are one family.

Rule (without a catalogue that says otherwise): the name lowercased, accents removed, every word
that is a number ("30", "20.000") or the word "mil" after one dropped, and digits glued to the end
of a longer word dropped ("compartir16" -> "compartir"; "d1" keeps its digit). Names that differ
only in amounts, in case or in accents fall into one family; everything else stays apart.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np

_NUMBER = re.compile(r"^\d+([.,]\d+)*$")
_GLUED = re.compile(r"^([^\W\d_]{3,})\d+$", re.UNICODE)


def family_of(name: str) -> str:
    """The family of one item name (see the module docstring)."""
    text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii").lower()
    words, after_number = [], False
    for word in text.split():
        if _NUMBER.match(word):
            after_number = True
            continue
        if after_number and word == "mil":
            continue
        after_number = False
        glued = _GLUED.match(word)
        words.append(glued.group(1) if glued else word)
    return " ".join(words) or text.strip()


def item_families(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The family code of each item of a vocabulary, and the family names (sorted)."""
    names = [family_of(item) for item in items]
    families = np.array(sorted(set(names)), dtype=object)
    index = {family: code for code, family in enumerate(families)}
    return np.array([index[name] for name in names], dtype=np.int32), families
