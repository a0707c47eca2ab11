"""One module per CLI subcommand: `add_parser(subparsers)` registers it, `run(args)` returns the exit code.

Why a package: each command's flags and glue stay next to each other, and cli.py stays a table.
"""
