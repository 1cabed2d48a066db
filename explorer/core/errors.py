"""Errors the command line reports as one message with exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: printed as one clear message, exit status 2."""
