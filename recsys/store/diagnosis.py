"""What a database error means for an operator: one line naming the store (password masked),
what failed and what to check, and whether trying again may help.

Drivers say what went wrong in several lines of their own text (libpq gives no code for a failed
connection), so the advice is read from that text, first match wins. Standard library only: the
lookup path (sqlite3, psycopg) and the store (SQLAlchemy) share it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

# (words in the driver's text, what to check, whether trying again may help), first match wins.
_ADVICE: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("password authentication failed", "authentication failed"), "check the user name and password", False),
    (("no pg_hba.conf entry",), "check that the server lets this user connect from this host (pg_hba.conf)", False),
    (("temporary failure in name resolution",), "check the network and its DNS", True),
    (
        ("failed to resolve host", "could not translate host name", "name or service not known", "nodename nor servname"),
        "check the host name",
        False,
    ),
    (("database \"",), "check the database name", False),  # database "x" does not exist
    (("role \"",), "check the user name", False),  # role "x" does not exist
    (("connection refused",), "check that the server is running and accepts TCP/IP connections on that host and port", True),
    (("no such file or directory",), "check the host (or socket folder): no server listens there", True),
    (("timeout expired", "timed out"), "check the host and port, and that no firewall drops the connection", True),
    (
        (
            "server closed the connection", "terminating connection", "consuming input failed", "connection reset",
            "broken pipe", "connection is closed", "connection is lost", "no connection to the server",
            "eof detected", "ssl syscall error", "server conn crashed",
        ),
        "the connection dropped: check the server and the network",
        True,
    ),
    (
        ("the database system is starting up", "the database system is shutting down", "in recovery mode", "cannot connect now"),
        "the server is restarting: it should answer again shortly",
        True,
    ),
    (
        ("too many clients", "too many connections", "remaining connection slots"),
        "the server has no free connection: check its max_connections and who holds them",
        True,
    ),
    (("database is locked", "database table is locked", "database schema is locked"), "another process is writing to the SQLite file: let it finish", True),
    (
        ("deadlock detected", "could not serialize", "lock not available", "lock timeout"),
        "another session held a lock: it should go away by itself",
        True,
    ),
    (("ssl",), "check the host, the port and the sslmode: the server there does not speak PostgreSQL's protocol as expected", False),
    (("permission denied", "must be owner"), "check the database user's privileges on the database and its schema", False),
    (
        ("database or disk is full", "no space left", "could not extend file", "disk full"),
        "free disk space where the database keeps its files",
        False,
    ),
    (("unable to open database file",), "check that the database file's folder exists and is writable", False),
    (("readonly database", "read-only"), "check that the database file and its folder are writable", False),
    (
        ("file is not a database", "malformed"),
        "it is not a SQLite database, or a damaged one: check --db-url; if it is the store, move it away and "
        "`recsys run` builds a new one",
        False,
    ),
)
# SQLSTATE classes and codes that describe a passing condition (connection lost, server
# restarting, no free connection, lock conflicts).
_TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "55P03")
_DEFAULT_ADVICE = "check the database server and its log"
BARE_PASSWORD = 8  # characters a password needs to be masked where a text quotes it bare
# Credentials inside any URL (scheme://user:password@host) and password=... pairs (libpq style).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@]*@")
_KEY_PASSWORD = re.compile(r"((?:password|passwd|pwd)\s*=\s*)('[^']*'|\"[^\"]*\"|[^\s&;,)]+)", re.IGNORECASE)


def advice(text: str, sqlstate: str | None = None) -> tuple[str, bool]:
    """(what to check, whether trying again may help) for a driver's error ``text``."""
    lowered = text.lower()
    for words, check, transient in _ADVICE:
        if any(word in lowered for word in words):
            return check, transient
    if sqlstate and sqlstate.startswith(_TRANSIENT_SQLSTATES):
        return "a passing condition of the server: it should go away by itself", True
    return _DEFAULT_ADVICE, False


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (drivers add hints and URLs on the lines after)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def describe(url: str, what: str, text: str, check: str | None = None) -> str:
    """One line: ``<store, password masked>: <what> (<driver's first line>); <what to check>``."""
    check = check or advice(text)[0]
    cause = redact(first_line(text), url)
    return f"{safe_url(url)}: {what}" + (f" ({cause})" if cause else "") + f"; {check}"


def safe_url(url: str) -> str:
    """``url`` with its password (in the credentials or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        if ":" in credentials:
            netloc = f"{credentials.split(':', 1)[0]}:***@{host}"
    query = parts.query
    if query and _KEY_PASSWORD.search(query.replace("&", " ")):
        pairs = [(key, "***" if key.lower() in ("password", "passwd", "pwd") else value) for key, value in parse_qsl(query, keep_blank_values=True)]
        query = urlencode(pairs, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to mask (and sqlite:////path keeps its empty host)
    return parts._replace(netloc=netloc, query=query).geturl()


def redact(text: str, url: str | None = None) -> str:
    """``text`` with every URL password and ``password=...`` masked, and ``url``'s password too
    wherever the text quotes it, when it is long enough (``BARE_PASSWORD``) to be told from the
    ordinary words of a message (a password "recsys" would mask every path to recsys.db)."""
    text = _URL_PASSWORD.sub(r"\1***@", str(text))
    text = _KEY_PASSWORD.sub(r"\1***", text)
    password = _password(url) if url else None
    if password and len(password) >= BARE_PASSWORD:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text


def _password(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    if password is None:
        for key, value in parse_qsl(parts.query):
            if key.lower() in ("password", "passwd", "pwd"):
                return value
    return password
