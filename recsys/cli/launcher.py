"""The ``recsys`` command's entry point: ``recsys lookup`` answers without starting Typer or Rich.

A lookup is read all day by people at a terminal and by scripts; importing the command-line
framework would cost more than the lookup itself. Every other command, and ``lookup --help``, goes
through the Typer app in ``recsys.cli.app``, which documents the same options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Run ``recsys`` with ``argv`` (default: the process's arguments)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["lookup"] and not {"--help", "-h"} & set(args[1:]):
        code = lookup_command(args[1:])
        if code is not None:
            sys.exit(code)
        # Arguments the fast path cannot read: the Typer app says what is wrong, as for any command.
    from recsys.cli import app as commands

    commands.PROCESS_STARTED[:] = [_process_start()]
    try:
        commands.app(args=args, prog_name="recsys")
    except SystemExit as done:
        if commands.ABANDON_PREFECT_AT_EXIT:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 1)
        raise


class _NotForTheFastPath(Exception):
    """Arguments the fast lookup cannot parse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _NotForTheFastPath(message)


def _process_start() -> float:
    """When this process started, by the kernel's clock (psutil comes with Prefect), else now."""
    import time

    try:
        import psutil

        return min(psutil.Process().create_time(), time.time())
    except Exception:  # noqa: BLE001 - without psutil the total starts at the command line
        return time.time()


def lookup_command(args: list[str]) -> int | None:
    """``recsys lookup [USER] [--output DIR] [--db-url URL] [--json]``; returns the exit code, or
    ``None`` when the arguments are not ones it reads (the Typer app then answers, in its style)."""
    from recsys.errors import RecsysError
    from recsys.store.lookup import format_answer, lookup
    from recsys.settings import DEFAULT_OUTPUT, DB_URL_ENV, resolve_db_url

    parser = _Parser(prog="recsys lookup", add_help=False, allow_abbrev=False)
    parser.add_argument("user", nargs="?")
    parser.add_argument("--output", "-o", default=str(DEFAULT_OUTPUT))
    parser.add_argument("--db-url", default=os.environ.get(DB_URL_ENV))
    parser.add_argument("--json", dest="as_json", action="store_true")
    try:
        options = parser.parse_args(args)
    except _NotForTheFastPath:
        return None
    user = options.user
    if user is None:
        try:
            user = input("Customer id: ")
        except EOFError:
            print("error: no customer id given", file=sys.stderr)
            return 1
    try:
        answer = lookup(user, resolve_db_url(options.output, options.db_url))
    except RecsysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(answer.as_dict(), ensure_ascii=False, indent=2) if options.as_json else format_answer(answer))
        sys.stdout.flush()
    except BrokenPipeError:  # `recsys lookup 1 | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    main()
