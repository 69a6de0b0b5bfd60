"""Wording shared by the command-line programs."""


def count_noun(count: int, noun: str) -> str:
    """Return `count` and `noun`, with a plural "s" unless the count is 1 ("1 prompt", "3 prompts")."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

