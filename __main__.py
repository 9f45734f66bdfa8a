"""``python -m twinsim``: the same command line as the ``twinsim`` script."""

from twinsim.cli import main

main()
