"""Workflows chaining the library's steps: :mod:`~flairkit.workflows.demo` (``flair demo``) and
:mod:`~flairkit.workflows.reproduce` (``flair reproduce``). They return values and report progress through
callbacks; the command line renders them."""
