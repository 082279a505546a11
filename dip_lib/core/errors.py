"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class DipError(Exception):
    """An error caused by the user's input (file, mask, option), not by a bug."""

    exit_code = 2
