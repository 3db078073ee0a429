"""The one error every data loader raises for bad or missing data."""

__all__ = ['DataError']


class DataError(Exception):
    """Bad or missing data; the message is one line meant for the user."""
