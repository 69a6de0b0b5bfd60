"""User-facing errors and the wrapper that turns them into clean command-line messages."""

import functools
import sys
from typing import Callable


class UserError(Exception):
    """An error caused by the user's input: printed as one message, without a traceback.

    The message names the bad value and the fix.
    """


def exit_on_user_error(main: Callable) -> Callable:
    """Wrap a command-line `main` so that a `UserError` prints `error: ...` and exits with 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapped
