"""TensorFlow's native start-up lines, kept off stderr.

TensorFlow's C++ libraries log through absl while they load ("oneDNN custom operations are on",
"Could not find cuda drivers", absl's own notice before them), straight to file descriptor 2,
before Python's logging exists and whatever ``TF_CPP_MIN_LOG_LEVEL`` says. In a log file or a
pipe they are noise. :func:`native_startup_lines_dropped` sends fd 2 to a temporary file for the
length of a block (the import) and writes back whatever else landed there.

Standard library only.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

# absl's line format (severity letter, MMDD, time: before absl is set up, "00:00:<epoch
# seconds>", thread, file:line]) and its pre-init notice.
_NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)"
)


@contextmanager
def native_startup_lines_dropped() -> Iterator[None]:
    """Run the block with fd 2 captured; afterwards write back everything but absl's lines.

    What Python writes to ``sys.stderr`` meanwhile (a progress bar's refresh, a warning) is kept
    and written once the block ends.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to protect
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not _NATIVE_LINE.match(line)]
            if kept:
                os.write(2, b"".join(kept))
