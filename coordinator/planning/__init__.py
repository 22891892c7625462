"""From a campaign file to experiments: the grid language, ``_extends``, provenance,
run order and the dispatch plan."""
