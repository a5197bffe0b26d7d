"""The config file of a run (TOML): options of ``recsys run`` under ``[run]``, the business rules
under ``[rules]``.

```toml
[run]                      # any option of `recsys run` by its long name (dashes or underscores)
data = "exports/latest.csv"

[rules]
blocklist = ["Curso Prueba"]   # never recommended
max_per_family = 2             # at most this many items of one family in a list (pins excepted)
exclude_seen_families = false  # true: nothing from a family the customer already had

[[rules.pin]]                  # a campaign: this item at this rank for everyone who has not had it
item = "Cine Colombia 2D"
rank = 1
```

Standard library only (``tomllib``): the command line reads it before anything heavy is imported.
Every mistake (an unknown key, a value of the wrong type) is one ``OptionError`` naming the file
and the key.
"""

import datetime
import enum
import hashlib
import json
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


def read_rule_files(options):
    """The catalogue and the config a run with ``options`` (``RunOptions``) reads besides the
    export, read and validated, pins checked against its ``top_k``: (``Catalogue`` or None,
    ``Config`` or None). ``recsys run`` and ``recsys schedule`` call it before Prefect starts, and
    every run again (a scheduled run reads the files of that night), so a bad catalogue or config
    is the same one line either way."""
    from recsys.data.catalogue import read_catalogue

    catalogue = read_catalogue(options.catalogue) if options.catalogue is not None else None
    config = read_config(options.config) if options.config is not None else None
    if config is not None:
        check_pins(config, options.top_k)
    return catalogue, config


def check_pins(config: Config, top_k: int) -> None:
    """Every pin's rank within lists of ``top_k`` items (``OptionError`` naming the file and pin)."""
    for pin in config.rules.pins:
        if pin.rank > top_k:
            raise OptionError(
                f"{config.path}: [[rules.pin]] {pin.item!r}: rank {pin.rank} is beyond top-k {top_k} "
                f"(the lists hold {top_k} items: pin it at rank {top_k} or less, or raise top-k)"
            )


def _table(path: Path, document: dict, name: str) -> dict:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise OptionError(f"{path}: {name} must be a table ([{name}])")
    return value


def _run_section(path: Path, section: dict) -> dict:
    """``[run]`` keys as RunOptions field names, each value of the field's type and within its
    bounds (a problem names the file and the key, not the command line's flag)."""
    from recsys.settings import RunOptions, field_problem

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
        if name == "run_date" and isinstance(value, datetime.datetime):
            raise OptionError(
                f"{path}: [run] {key}: must be a day, not the time {_toml(value)}: write {_toml(value.date().isoformat())}"
            )
        if name == "run_date" and isinstance(value, datetime.date):
            value = value.isoformat()  # a TOML date, run-date = 2022-12-31: the day it names
        value = _typed(path, f"[run] {key}", value, hints[name])
        problem = field_problem(name, value)
        if problem:
            raise OptionError(f"{path}: [run] {key}: {problem}")
        out[name] = value
    return out


def _toml(value) -> str:
    """``value`` as it is written in TOML (what the file's author typed), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + "}"
    return repr(value)


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
        if kind is int:
            name = "a whole number"
        elif kind is bool:
            name = "true or false"
        elif kind is float:
            name = "a number"
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            name = "one of " + ", ".join(_toml(member.value) for member in kind)
        else:
            name = "a path in quotes" if kind is Path else "text in quotes"
        hint = ""
        if kind in (str, Path) and isinstance(value, (datetime.date, datetime.time, int, float)):
            hint = f": write it as a string, {_toml(_toml(value))}"  # a TOML date or number, unquoted
        raise OptionError(f"{path}: {where}: must be {name}, not {_toml(value)}{hint}")
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
