"""Output-folder checks and wording shared by the command-line programs."""

import pathlib

from pstroke.errors import UserError


def count_noun(count: int, noun: str) -> str:
    """Return `count` and `noun`, with a plural "s" unless the count is 1 ("1 prompt", "3 prompts")."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def check_output_folder(path: pathlib.Path, flag: str) -> pathlib.Path:
    """Create the output folder `path` (given as `flag`) if missing and return it.

    Raises:
      UserError: `path` or one of its parents is a file, or the folder cannot be created.
    """
    for candidate in (path, *path.parents):
        if candidate.exists() and not candidate.is_dir():
            where = "it is" if candidate == path else f"{str(candidate)!r} is"
            raise UserError(f"invalid {flag}={str(path)!r}: {where} a file, not a folder; pass a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {flag}={str(path)!r} ({error.strerror or error}); "
                        f"pass a {flag} you can write to") from None
    return path
