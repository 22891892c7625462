"""``python -m lem.coordinator`` is the ``lem`` command."""

from lem.coordinator.entry import run

run()
