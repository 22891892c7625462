"""``python -m lem.coordinator`` is the ``lem`` command."""

from lem.coordinator.cli.main import main

main()
