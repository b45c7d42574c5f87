"""The one exception the producer raises for input it refuses (exit code 2, one line)."""

from __future__ import annotations


class BadInput(ValueError):
    """Input the producer refuses: the message is the one line the user sees."""
