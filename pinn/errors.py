"""User-facing errors: shown as one line naming the key or file, without a traceback.

    UserError        bad input (params, files, arguments)              exit status 2
    DivergenceError  training went non-finite and the retry policy
                     is exhausted, or a result would be non-finite     exit status 3

`one_line_errors(fn)` wraps a command: these errors become one line on stderr and the exit status
above; `PINN_DEBUG=1` re-raises them with their traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

USER_ERROR_EXIT = 2
DIVERGENCE_EXIT = 3


class UserError(ValueError):
    """Bad input from the user (params, files, command-line arguments)."""


class DivergenceError(RuntimeError):
    """Training produced non-finite losses or gradients and the retry policy is exhausted."""


def one_line_errors(fn: F) -> F:
    """Turn `UserError` / `DivergenceError` into one line on stderr and exit status 2 / 3."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, DivergenceError) as e:
            if os.environ.get("PINN_DEBUG"):
                raise
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(USER_ERROR_EXIT if isinstance(e, UserError) else DIVERGENCE_EXIT)

    return wrapper  # type: ignore[return-value]
