"""How an export file's bytes are read, before the CSV reader sees them: compressed (gzip, bzip2,
xz) or zipped alone, known by the first bytes whatever the file is called; a separator of several
characters ("::") rewritten to one the reader takes; the encoding checked.

Standard library and pyarrow only; every unreadable file is one ``DataError`` naming it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from recsys.errors import DataError

SNIFF_BYTES = 64 * 1024  # the head read to tell the format, the header line and line endings
# What a delimiter of several characters ("::") is rewritten to, for the CSV reader's single one.
UNIT_SEPARATOR = "\x1f"
_REPLACING_BLOCK_BYTES = 1 << 20
# What reading a truncated or corrupt compressed file raises.
UNREADABLE = (OSError, EOFError, zipfile.BadZipFile)
_COMPRESSED = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "lzma", b"PK\x03\x04": "zipfile"}


def compression(path: Path) -> str | None:
    """The standard-library module that decompresses ``path`` (gzip, bz2, lzma, zipfile), or None."""
    with open(path, "rb") as handle:
        start = handle.read(6)
    return next((module for magic, module in _COMPRESSED.items() if start.startswith(magic)), None)


def _native(path: Path):
    """The plain file as Arrow's own input stream (read without the Python layer)."""
    import pyarrow as pa

    return pa.OSFile(str(path), "rb")


def open_bytes(path: Path):
    """The file's bytes as a binary file object, decompressed when the file is compressed."""
    module = compression(path)
    if module is None:
        return open(path, "rb")
    if module == "zipfile":
        return _zip_member(path)
    import importlib

    return importlib.import_module(module).open(path, "rb")


def _zip_member(path: Path):
    """The one file of a zip archive, open; an Excel workbook or an archive of several files is
    refused, naming what to do."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            if "xl/workbook.xml" in names:
                raise DataError(f"{path}: an Excel workbook, not a CSV file: save its sheet as CSV (UTF-8) and pass that")
            files = [name for name in names if not name.startswith("__MACOSX/") and not name.rsplit("/", 1)[-1].startswith(".")]
            if len(files) != 1:
                shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
                raise DataError(
                    f"{path}: a zip archive of {len(files)} files ({shown or 'none'}): unzip it and pass the export's file"
                )
            return archive.open(files[0])  # stays readable once the archive object is closed
    except zipfile.BadZipFile as exc:
        raise DataError(f"{path}: a zip archive that cannot be read ({exc})") from None


def unreadable(path: Path, exc: BaseException) -> DataError:
    """The one-line error for a file whose reading failed with ``exc`` (one of ``UNREADABLE``)."""
    what = "a compressed file that cannot be read" if compression(path) else "cannot be read"
    return DataError(f"{path}: {what} ({exc})")


def read_head(path: Path) -> bytes:
    with open_bytes(path) as handle:
        try:
            return handle.read(SNIFF_BYTES)
        except UNREADABLE as exc:  # a truncated or corrupt compressed file
            raise unreadable(path, exc) from None


def csv_source(path: Path, delimiter: str):
    """What the CSV reader reads: the file, or for a delimiter of several characters (MovieLens's
    "::"), the file streamed with each of them rewritten to one the reader takes."""
    if len(delimiter) == 1:
        # An open file, never the path: the reader would guess a compression from the name.
        return _native(path) if compression(path) is None else open_bytes(path)
    return io.BufferedReader(_Replacing(path, delimiter.encode("utf-8"), UNIT_SEPARATOR.encode()), 1 << 20)


class _Replacing(io.RawIOBase):
    """A binary file read with every ``old`` replaced by ``new``, a whole number of lines at a time
    (``old`` holds no line break, so it never spans two lines)."""

    def __init__(self, path: Path, old: bytes, new: bytes):
        super().__init__()
        self._file, self._old, self._new = open_bytes(path), old, new
        self._tail = self._ready = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._ready:
            block = self._file.read(_REPLACING_BLOCK_BYTES)
            if not block:
                self._ready, self._tail = self._tail.replace(self._old, self._new), b""
                break
            text = self._tail + block
            cut = text.rfind(b"\n") + 1
            self._ready, self._tail = text[:cut].replace(self._old, self._new), text[cut:]
        size = min(len(buffer), len(self._ready))
        buffer[:size] = self._ready[:size]
        self._ready = self._ready[size:]
        return size

    def close(self) -> None:
        self._file.close()
        super().close()


def is_utf8(path: Path) -> bool:
    """Whether the whole file decodes as UTF-8 (streamed; a Latin-1 export fails somewhere)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    with open_bytes(path) as handle:
        try:
            for block in iter(lambda: handle.read(1 << 22), b""):
                decoder.decode(block)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        except UNREADABLE as exc:  # a compressed file truncated or corrupt past its start
            raise unreadable(path, exc) from None
    return True
