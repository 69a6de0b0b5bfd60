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
        raise UserError(f"failed to create {flag}={str(path)!r} ({error.strerror or error}); "
                        f"pass a {flag} you can write to") from None
    return path


def check_no_earlier_run(path: pathlib.Path, flag: str) -> None:
    """Raise `UserError` if the folder `path` (given as `flag`) contains prompt folders or results.json.

    Files of an earlier run left next to new ones would be scored with them by `pstroke.evaluate`,
    so the user removes them or picks another folder. Nothing is deleted here.
    """
    if not path.is_dir():
        return
    earlier = sorted(child.name for child in path.iterdir() if child.is_dir() and child.name.isdigit())
    found = []
    if earlier:
        names = ", ".join(earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        found.append(f"{count_noun(len(earlier), 'prompt folder')} ({names})")
    if (path / "results.json").exists():
        found.append("results.json")
    if found:
        raise UserError(f"{flag}={str(path)!r} already contains an earlier run's {' and '.join(found)}; "
                        f"pass a new {flag} or remove that folder")
