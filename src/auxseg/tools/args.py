"""Argument types shared by the command-line parsers (:mod:`auxseg.cli` and the tools it delegates to)."""

from __future__ import annotations

import argparse


def int_at_least(minimum: int, wording: str):
    """An argparse ``type`` accepting integers >= ``minimum``; ``wording`` names the bound in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {value}")
        return value

    return parse


__all__ = ["int_at_least"]
