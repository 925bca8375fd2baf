"""The terminal adapter (``switchboard console`` and the demo)."""

from bots.console.adapter import ConsoleAdapter, ConsoleSink, stdin_reader

__all__ = ["ConsoleAdapter", "ConsoleSink", "stdin_reader"]
