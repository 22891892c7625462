"""Inference engines behind one interface (``base.py``): one package per engine with
its translation beside it, and the sleep engine used by tests."""
