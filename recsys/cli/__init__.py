"""The `recsys` command line: a thin layer over the package (launcher, Typer app, terminal display)."""
