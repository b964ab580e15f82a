"""The error a learner config raises for a bad value: `ConfigError`, naming its fields."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config field (or several fields together) out of its allowed range.

    ``fields`` names them (the dataclass field names), so that a command line can point at
    its options without reading the message.
    """

    def __init__(self, fields: str | tuple[str, ...], message: str) -> None:
        self.fields = (fields,) if isinstance(fields, str) else tuple(fields)
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return type(self), (self.fields, str(self))
