"""Reading results back: export columns, tables, compare and significance, the
Python API."""
