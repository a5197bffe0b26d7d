"""`python -m recsys.cli`: the `recsys` command."""

from recsys.cli.launcher import main

main()
