"""User-facing errors: shown as one line naming the key or file, without a traceback."""


class UserError(ValueError):
    """Bad input from the user (params, files, command-line arguments)."""
