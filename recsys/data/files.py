"""How an export file's bytes are read, before the CSV reader sees them: compressed (gzip, bzip2,
xz) or zipped alone, known by the first bytes whatever the file is called; a separator of several
characters ("::") rewritten to one the reader takes; the encoding told (UTF-8, or 8-bit
Windows-1252) and a file mixing both refused.

Standard library and pyarrow only; every unreadable file is one ``DataError`` naming it.
"""

from __future__ import annotations

import codecs
import io
import itertools
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


def check_text_head(path: Path, head: bytes, what: str = "it") -> None:
    """Refuse a file whose first bytes are not text a CSV reader can take: UTF-16 (Excel's
    "Unicode text", known by its byte-order mark) is told to be saved as UTF-8 (``what``: how the
    message names the file, "it" or "the catalogue"); other bytes with zeros are binary data."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text, not UTF-8: save {what} again as CSV UTF-8 (or convert it with iconv)")
    if b"\x00" in head:
        raise DataError(f"{path}: not a CSV file (it holds binary data)")


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


# The encoding an 8-bit export is read in (what Excel on Windows saves as "CSV" in Western
# European locales): Windows-1252, its five undefined bytes (0x81 0x8D 0x8F 0x90 0x9D) read as
# Latin-1 reads them, so that no byte stops the read. Registered with ``codecs`` under this name
# for the CSV reader, which looks its encoding up there.
EIGHT_BIT = "recsys_cp1252"
EIGHT_BIT_NAME = "Windows-1252"
_SCAN_BYTES = 1 << 22


def _eight_bit_table() -> str:
    def char(byte: int) -> str:
        try:
            return bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:
            return chr(byte)

    return "".join(char(byte) for byte in range(256))


_EIGHT_BIT_TABLE = _eight_bit_table()
_EIGHT_BIT_ENCODING = codecs.charmap_build(_EIGHT_BIT_TABLE)


class _EightBitDecoder(codecs.IncrementalDecoder):
    def decode(self, data, final=False):
        return codecs.charmap_decode(data, self.errors, _EIGHT_BIT_TABLE)[0]


class _EightBitEncoder(codecs.IncrementalEncoder):
    def encode(self, text, final=False):
        return codecs.charmap_encode(text, self.errors, _EIGHT_BIT_ENCODING)[0]


def _find_eight_bit(name: str):
    if name.replace("-", "_") != EIGHT_BIT:
        return None
    return codecs.CodecInfo(
        name=EIGHT_BIT,
        encode=lambda text, errors="strict": codecs.charmap_encode(text, errors, _EIGHT_BIT_ENCODING),
        decode=lambda data, errors="strict": codecs.charmap_decode(data, errors, _EIGHT_BIT_TABLE),
        incrementalencoder=_EightBitEncoder,
        incrementaldecoder=_EightBitDecoder,
    )


codecs.register(_find_eight_bit)


def text_encoding(path: Path) -> str:
    """The encoding the CSV reader reads the file in: ``"utf8"`` when the whole file is UTF-8;
    ``EIGHT_BIT`` when it holds bytes UTF-8 does not allow and no UTF-8 sequence of several bytes
    (an 8-bit export, Windows-1252 or Latin-1: "Café" written as one byte for the "é").

    A file that holds both is refused with a ``DataError`` naming the line of its first byte that
    is not UTF-8: a UTF-8 export with a few lines in another encoding, which read either way would
    silently garble the names of one kind or the other ("Café" read as "CafÃ©").

    Streamed, and each byte looked at once: a UTF-8 file is decoded once, as it always was; after
    the first byte that is not UTF-8, the rest is only searched for a sequence that is (up to the
    end of the file for an 8-bit export).
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 0  # line breaks before the block being decoded
    several_bytes = False  # a UTF-8 sequence of several bytes seen (a character outside ASCII)
    with open_bytes(path) as handle:
        try:
            blocks = iter(lambda: handle.read(_SCAN_BYTES), b"")
            for block in blocks:
                pending = decoder.getstate()[0]  # the start of a sequence the last block cut
                try:
                    text = decoder.decode(block)
                except UnicodeDecodeError as exc:
                    data = pending + block
                    # A cut sequence holds no line break: a bad byte in it is on the block's first line.
                    line = lines + block.count(b"\n", 0, max(exc.start - len(pending), 0)) + 1
                    if several_bytes or not data[: exc.start].isascii() or _holds_utf8(data[exc.start :], blocks):
                        raise _mixed(path, line, data[exc.start]) from None
                    return EIGHT_BIT
                several_bytes = several_bytes or not text.isascii()
                lines += block.count(b"\n")
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:  # the file ends within a sequence
                if several_bytes:
                    raise _mixed(path, lines + 1, exc.object[exc.start]) from None
                return EIGHT_BIT
        except UNREADABLE as exc:  # a compressed file truncated or corrupt past its start
            raise unreadable(path, exc) from None
    return "utf8"


def _holds_utf8(start: bytes, blocks) -> bool:
    """Whether ``start`` and then ``blocks`` hold a valid UTF-8 sequence of several bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")  # what is not UTF-8 dropped
    for block in itertools.chain([start], blocks):
        if not decoder.decode(block).isascii():
            return True
    return not decoder.decode(b"", final=True).isascii()


def _mixed(path: Path, line: int, byte: int) -> DataError:
    return DataError(
        f"{path}: line {line}: not valid UTF-8 (byte 0x{byte:02X}), though other lines are UTF-8: the file "
        "mixes two encodings and would be misread either way; correct that line and re-save the file as UTF-8"
    )
