"""`python -m securechat` runs the CLI."""

from securechat.cli import main

main()
