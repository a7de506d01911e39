"""The hwprune command (the `hwprune` console script, `python -m hwprune.cli`): argument
parsing and printing only; the work is in the API.

    main.py      the parser, and analyze, slim and apply
    common.py    what the commands share: model arguments and loading, console, progress
    options.py   slim's budget and --importance flags, built from the registries
    hardware.py  targets, profile, bench, and slim's --target options
    recover.py   finetune, and slim --recover
    sparse.py    sparsify
"""
from .main import EXIT_INTERRUPTED, EXIT_USAGE, build_parser, main

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "build_parser", "main"]
