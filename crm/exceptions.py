from __future__ import annotations


class StaleVersion(Exception):
    """The record changed since the caller read it."""

    def __init__(self, *, current_version: int, expected_version: int) -> None:
        self.current_version = current_version
        self.expected_version = expected_version
        super().__init__(
            f"The customer was changed by someone else (now version {current_version}, "
            f"you edited version {expected_version}): reload it and apply your change again."
        )
