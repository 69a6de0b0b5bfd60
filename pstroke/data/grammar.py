"""The fixed text grammar of trajectories: plans, inspections and corrections.

Every sentence is built from the world's names and the words in `tokenizer.GRAMMAR_WORDS`, with
punctuation as separate words, so the word tokenizer round-trips it exactly.
"""

from pstroke.data.tokenizer import plural

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
PROMPT_PREFIX = "Please create the image step-by-step :"
MATCHES_PROMPT = "the image matches the prompt"


def article(word: str) -> str:
    """Return "an" before a vowel sound, else "a"."""
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(shape: str, color: str | None, count: int = 1) -> str:
    """Return "a red circle", "a circle", "two red circles"."""
    words = " ".join(part for part in (color, shape if count == 1 else plural(shape)) if part)
    if count == 1:
        return f"{article(words)} {words}"
    return f"{NUMBER_WORDS[count]} {words}"


def definite(shape: str, color: str | None) -> str:
    """Return "the red circle" or "the circle"."""
    return " ".join(part for part in ("the", color, shape) if part)


def prompt_text(prompt: str) -> str:
    """Return the text of a process sample's prompt segment."""
    return f"{PROMPT_PREFIX} {prompt}"


def plan(instruction: str, description: str) -> str:
    """Return a plan: the step instruction and the whole-scene description after the step."""
    return f"<ins> {instruction} </ins> <des> {description} </des>"


def refine(instruction: str) -> str:
    """Return a correction instruction."""
    return f"<refine> {instruction} </refine>"


def still_to_add(missing: list[str]) -> str:
    """Return the inspection of a consistent but unfinished state."""
    return "correct so far ; still to add : " + (" , ".join(missing) or "nothing")


def relation_clause(subject: str, relation: str, reference: str) -> str:
    """Return "the blue square is left of the red circle" from two definite phrases."""
    return f"{subject} is {relation} {reference}"
