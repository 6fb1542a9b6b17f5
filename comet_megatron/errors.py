"""Exceptions raised at construction time for configurations Comet cannot run."""


class CometConfigError(ValueError):
    """A configuration Comet does not support; the message names the option and what to set."""
