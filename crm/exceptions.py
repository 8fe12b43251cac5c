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


class Conflict(Exception):
    """The request reuses an identifier that already names something else.

    ``errors`` maps each offending field to a message that says what to do,
    without revealing what the identifier belongs to.
    """

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__(" ".join(errors.values()))


class FieldAccessDenied(Exception):
    """The caller asked to set customer fields it may not change (see crm.field_access).

    ``errors`` maps each refused field to the reasons and the way to get it changed.
    """

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__(" ".join(f"{field}: {' '.join(why)}" for field, why in errors.items()))
