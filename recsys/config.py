"""The config file of a run (TOML): options of ``recsys run`` under ``[run]``, the business rules
under ``[rules]``.

```toml
[run]                      # any option of `recsys run` by its long name (dashes or underscores)
data = "exports/latest.csv"

[rules]
blocklist = ["Curso Prueba"]   # never recommended
max_per_family = 2             # at most this many items of one family in a list
exclude_seen_families = false  # true: nothing from a family the customer already had

[[rules.pin]]                  # a campaign: this item at this rank for everyone who has not had it
item = "Cine Colombia 2D"
rank = 1
```

Standard library only (``tomllib``): the command line reads it before anything heavy is imported.
Every mistake (an unknown key, a value of the wrong type) is one ``OptionError`` naming the file
and the key.
"""

import enum
import hashlib
import tomllib
import typing
from dataclasses import dataclass, fields
from pathlib import Path

from recsys.errors import OptionError


@dataclass(frozen=True)
class Pin:
    """A campaign: ``item`` at ``rank`` (1 = first) for every customer who has not had it."""

    item: str
    rank: int


@dataclass(frozen=True)
class Rules:
    """The business rules of a run (all optional; the defaults change nothing)."""

    blocklist: tuple[str, ...] = ()
    max_per_family: int | None = None
    exclude_seen_families: bool = False
    pins: tuple[Pin, ...] = ()

    @property
    def empty(self) -> bool:
        """Whether the rules change nothing."""
        return not (self.blocklist or self.max_per_family or self.exclude_seen_families or self.pins)


@dataclass(frozen=True)
class Config:
    """A read config file: its ``[run]`` options (by RunOptions field name), its rules, its text."""

    path: str
    run: dict
    rules: Rules
    text: str

    @property
    def sha256(self) -> str:
        """SHA-256 of the file's text (what ``runs.metrics["rules"]["config_sha256"]`` records)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


RULE_KEYS = ("blocklist", "max_per_family", "exclude_seen_families", "pin")


def read_config(path) -> Config:
    """Read and validate the config file at ``path`` (``OptionError`` naming the file and key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptionError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OptionError(f"{path}: cannot read the config file ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"{path}: not valid TOML ({exc})") from None
    for key in document:
        if key not in ("run", "rules"):
            raise OptionError(f"{path}: unknown section [{key}] (use [run] and [rules])")
    run = _run_section(path, _table(path, document, "run"))
    rules = _rules_section(path, _table(path, document, "rules"))
    return Config(path=str(path), run=run, rules=rules, text=text)


def _table(path: Path, document: dict, name: str) -> dict:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise OptionError(f"{path}: {name} must be a table ([{name}])")
    return value


def _run_section(path: Path, section: dict) -> dict:
    """``[run]`` keys as RunOptions field names, each value of the field's type."""
    from recsys.settings import RunOptions

    hints = typing.get_type_hints(RunOptions)
    known = {spec.name for spec in fields(RunOptions)} - {"config"}
    out = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in known:
            raise OptionError(
                f"{path}: [run] {key}: unknown option (options of recsys run: "
                f"{', '.join(sorted(n.replace('_', '-') for n in known))})"
            )
        out[name] = _typed(path, f"[run] {key}", value, hints[name])
    return out


def _typed(path: Path, where: str, value, kind):
    """``value`` checked against the field type ``kind`` (Path, str, int, bool, enum, or X | None)."""
    args = typing.get_args(kind)
    if type(None) in args:
        kind = next(arg for arg in args if arg is not type(None))
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind in (str, Path) or (isinstance(kind, type) and issubclass(kind, enum.Enum)):
        ok = isinstance(value, str)
    else:  # pragma: no cover - a new field type needs a rule here
        ok = True
    if not ok:
        name = "a path" if kind is Path else "text" if kind is str else getattr(kind, "__name__", str(kind))
        raise OptionError(f"{path}: {where}: must be {name}, not {value!r}")
    return value


def _rules_section(path: Path, section: dict) -> Rules:
    for key in section:
        if key not in RULE_KEYS:
            raise OptionError(f"{path}: [rules] {key}: unknown key (use {', '.join(RULE_KEYS)})")
    blocklist = section.get("blocklist", [])
    if not isinstance(blocklist, list) or not all(isinstance(item, str) and item.strip() for item in blocklist):
        raise OptionError(f"{path}: [rules] blocklist: must be a list of item names, not {blocklist!r}")
    cap = section.get("max_per_family")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise OptionError(f"{path}: [rules] max_per_family: must be a whole number of at least 1, not {cap!r}")
    seen_families = section.get("exclude_seen_families", False)
    if not isinstance(seen_families, bool):
        raise OptionError(f"{path}: [rules] exclude_seen_families: must be true or false, not {seen_families!r}")
    pins_value = section.get("pin", [])
    if not isinstance(pins_value, list):
        raise OptionError(f"{path}: [rules] pin: must be [[rules.pin]] tables with item and rank")
    pins: list[Pin] = []
    for number, pin in enumerate(pins_value, start=1):
        where = f"[[rules.pin]] #{number}"
        if not isinstance(pin, dict):
            raise OptionError(f"{path}: {where}: must be a table with item and rank")
        for key in pin:
            if key not in ("item", "rank"):
                raise OptionError(f"{path}: {where} {key}: unknown key (use item and rank)")
        item, rank = pin.get("item"), pin.get("rank")
        if not isinstance(item, str) or not item.strip():
            raise OptionError(f"{path}: {where} item: must be an item name, not {item!r}")
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise OptionError(f"{path}: {where} rank: must be a whole number of at least 1, not {rank!r}")
        if any(other.rank == rank for other in pins):
            raise OptionError(f"{path}: {where} rank: rank {rank} is pinned twice")
        if any(other.item == item.strip() for other in pins):
            raise OptionError(f"{path}: {where} item: {item.strip()!r} is pinned twice")
        pins.append(Pin(item.strip(), rank))
    return Rules(
        blocklist=tuple(item.strip() for item in blocklist),
        max_per_family=cap,
        exclude_seen_families=seen_families,
        pins=tuple(sorted(pins, key=lambda pin: pin.rank)),
    )
