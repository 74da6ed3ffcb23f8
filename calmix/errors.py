"""User-facing errors: the CLI prints them as one line and exits with code 2."""


class CalmixError(Exception):
    """A problem with the user's input; the message names the problem and the fix."""


def require(condition: bool, message: str) -> None:
    """Raise CalmixError(message) unless condition holds."""
    if not condition:
        raise CalmixError(message)
