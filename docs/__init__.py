"""lem's user documentation, shipped as package data of ``lem.docs``.

The ``*.md`` pages of this folder (not its subfolders) go into the wheel, so that what lem's
messages point to (``lem docs methodology``, ``lem docs results``, ...) is there in an
installed lem too. Read them with ``importlib.resources.files("lem.docs")``.
"""
