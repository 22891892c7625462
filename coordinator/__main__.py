"""``python -m lem.coordinator`` is the ``lem`` command."""

from lem.coordinator.cli import main

main()
