"""The one error type a user sees: a single clear line, no traceback."""


class BuildError(Exception):
    """A problem with the user's input or environment, worded for the user.

    Adapters print ``str(error)`` on one line and exit non-zero.
    """
