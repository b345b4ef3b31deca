"""Exceptions whose messages name the problem and the fix, so a bad input fails early and clearly."""


class PCKDError(Exception):
    """Base class of the errors this library raises on bad input."""


class ConfigError(PCKDError, ValueError):
    """A configuration value is unknown, out of range or inconsistent with another."""


class DataError(PCKDError, ValueError):
    """A data folder or file is missing or malformed."""


class CheckpointError(PCKDError, ValueError):
    """A checkpoint is missing, unreadable or does not match the model it is loaded into."""
