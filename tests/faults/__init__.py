"""Fault-injection tests: lem under crashes, kills, signals, damaged or shared stores and
hostile output paths. README.md lists each test and what it proves."""
