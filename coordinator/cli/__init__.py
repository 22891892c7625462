"""The ``lem`` command line: commands, shared options, progress display, doctor."""
