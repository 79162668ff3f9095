"""``python -m flairkit`` runs the ``flair`` command line."""

from flairkit.cli.main import main

main()
