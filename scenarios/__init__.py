"""Pydantic specs, workflows, file I/O and the command line."""
