"""The bottom layer every other package may import: the one config error type and the checks
every config shares (`common.checks`). It imports nothing of the project."""

from common.checks import ConfigError

__all__ = ["ConfigError"]
