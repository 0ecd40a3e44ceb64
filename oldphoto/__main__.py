"""`python -m oldphoto ...` runs the command line."""

from .cli import main

main()
