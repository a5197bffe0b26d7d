"""The run's log file, ``DIR/logs/recsys.log``: the same file and the same lines whether the run
was started by ``recsys run`` or by the scheduled deployment.

Standard library only (and the store's password masking).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOG_FILE = Path("logs") / "recsys.log"


def log_path(output: Path | str) -> Path:
    """Where the runs publishing to ``output`` write their log."""
    return Path(output) / LOG_FILE


class RunFormatter(logging.Formatter):
    """``time | level | logger [flow run / task run] - message``: a line of Prefect's says which
    run and which task it is about (``Finished in state Completed()`` alone says neither)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s | %(levelname)-7s | %(name)s%(run_names)s - %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        names = [getattr(record, key, None) for key in ("flow_run_name", "task_run_name")]
        names = [name for name in names if name and name != "<unknown>"]
        record.run_names = f" [{' / '.join(names)}]" if names else ""
        return super().format(record)


class PasswordFilter:
    """A logging filter that masks URL passwords (``scheme://user:***@host``, ``password=***``)
    in a record's message and traceback, whatever wrote them."""

    def filter(self, record) -> bool:
        from recsys.store.diagnosis import redact

        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def file_handler(path: Path) -> tuple[logging.Handler, Path | None]:
    """A handler appending to ``path`` (its folder created), and the path; when it cannot be
    written, a handler that drops everything and ``None`` (the run reports the folder itself)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        return logging.NullHandler(), None
    handler.setFormatter(RunFormatter())
    handler.addFilter(PasswordFilter())
    return handler, path


def is_written(path: Path) -> bool:
    """Whether a handler of the root logger already writes ``path`` (``recsys run`` installed it)."""
    target = str(Path(path).resolve())
    return any(
        isinstance(handler, logging.FileHandler) and handler.baseFilename == target
        for handler in logging.getLogger().handlers
    )


@contextmanager
def logging_to(path: Path) -> Iterator[Path | None]:
    """Every log line of the block (the root logger's) also goes to ``path``; yields the path,
    or ``None`` when it cannot be written."""
    handler, written = file_handler(path)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield written
    finally:
        root.removeHandler(handler)
        handler.close()
