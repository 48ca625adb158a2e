"""`python -m edgert ...` is the `edgert` command (a board's server runs this way from its venv)."""

from edgert.cli import main

main()
