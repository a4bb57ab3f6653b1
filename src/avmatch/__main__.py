"""`python -m avmatch ...`: the `avmatch` command, for a checkout without the console script on PATH."""

from avmatch.cli import main

main()
