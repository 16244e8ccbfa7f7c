"""`python -m visitshare.cli`: the same as the `visitshare` command."""

from visitshare.cli import main

main()
