"""Word-level tokenizer whose vocabulary is built from the Shapes world.

The `Tokenizer` protocol is what the sequence builder and the rollout use; a Qwen2 BPE tokenizer
can implement it later (its special ids are 151643..151653). `WordTokenizer` splits text into
words, punctuation marks and the special tokens, so `decode(encode(text))` returns the text with
single spaces between those pieces. The trajectory grammar writes its text that way, so its texts
round-trip exactly.
"""

import functools
import re
from typing import Iterable, Protocol, Sequence

import numpy as np

from pstroke.errors import UserError

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
END_OF_TEXT, PAD = "<|endoftext|>", "<|pad|>"
TAGS = ("<ins>", "</ins>", "<des>", "</des>", "<refine>", "</refine>")
SPECIAL_TOKENS = (PAD, END_OF_TEXT, IM_START, IM_END, VISION_START, VISION_END) + TAGS

# Words of the trajectory grammar (pstroke.data.grammar) that the world's names do not supply.
GRAMMAR_WORDS = (
    "Please", "create", "the", "image", "step-by-step", ":", ";", ",", "a", "an", "and", "another",
    "add", "change", "swap", "remove", "make", "move", "to", "of", "is", "are", "not", "so", "far",
    "still", "correct", "matches", "prompt", "plan", "conflicts", "with", "does", "match", "should",
    "be", "has", "no", "extra", "missing", "wrong", "place", "places", "color", "colors", "instead",
    "excludes", "than", "more", "fewer", "empty", "canvas", "there", "it", "its", "one", "two",
    "three", "four", "five", "six", "seven", "eight", "nine", "ten", "zero", "nothing", "left",
    "right", "above", "below", "photo", "in", "on", "at", "placed", "drawn", "which", "asks", "for",
    "conflicts", "image", "empty",
)

_PIECE = re.compile(r"<\|[a-z_]+\|>|</?[a-z]+>|[a-z0-9]+(?:-[a-z0-9]+)*|[^\sa-z0-9]", re.IGNORECASE)


class Tokenizer(Protocol):
    """Text <-> token ids, with the special ids the sequence format needs."""

    vocab_size: int
    pad_id: int
    end_of_text_id: int  # end of the whole sequence
    im_start_id: int  # text segment start (bos)
    im_end_id: int  # text segment end (eos)
    vision_start_id: int
    vision_end_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def split_words(text: str) -> list[str]:
    """Split `text` into words (hyphenated words stay whole), punctuation marks and special tokens.

    Words are case-sensitive: the world's names are lower case, the prompt prefix starts with
    "Please".
    """
    return _PIECE.findall(text)


class WordTokenizer:
    """A fixed word vocabulary: special tokens first (pad is id 0), then words in sorted order."""

    def __init__(self, words: Iterable[str]):
        regular = sorted(set(words) - set(SPECIAL_TOKENS))
        self.vocabulary: tuple[str, ...] = SPECIAL_TOKENS + tuple(regular)
        self._ids = {word: index for index, word in enumerate(self.vocabulary)}
        self.vocab_size = len(self.vocabulary)
        self.pad_id = self._ids[PAD]
        self.end_of_text_id = self._ids[END_OF_TEXT]
        self.im_start_id = self._ids[IM_START]
        self.im_end_id = self._ids[IM_END]
        self.vision_start_id = self._ids[VISION_START]
        self.vision_end_id = self._ids[VISION_END]

    def encode(self, text: str) -> list[int]:
        """Return the ids of `text`; raises UserError on a word outside the vocabulary."""
        ids = []
        for word in split_words(text):
            if word not in self._ids:
                raise UserError(f"word {word!r} in {text!r} is not in the Shapes vocabulary; "
                                "use the world's shape, colour and relation names")
            ids.append(self._ids[word])
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Return the words of `ids` joined by single spaces (pad ids are skipped)."""
        return " ".join(self.vocabulary[int(i)] for i in np.asarray(ids).ravel() if int(i) != self.pad_id)


def plural(noun: str) -> str:
    """Return the English plural of a shape name ("circle" -> "circles", "cross" -> "crosses")."""
    if noun.endswith(("s", "x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


@functools.lru_cache(maxsize=None)
def world_words() -> frozenset[str]:
    """Return every word the world and the trajectory grammar can produce."""
    from pstroke.world import prompts, scene

    words = set(GRAMMAR_WORDS)
    for name in prompts.VOCABULARY + scene.SHAPES + scene.COLORS + scene.RELATIONS:
        words.update(split_words(name))
    for shape in scene.SHAPES:
        words.update(split_words(plural(shape)))
    return frozenset(words)


def build_tokenizer(config) -> WordTokenizer:
    """Build the Shapes tokenizer and check that it fits `config.model.llm.vocab_size`."""
    tokenizer = WordTokenizer(world_words())
    limit = config.model.llm.vocab_size
    if tokenizer.vocab_size > limit:
        raise UserError(f"the Shapes vocabulary has {tokenizer.vocab_size} tokens but "
                        f"model.llm.vocab_size is {limit}; set model.llm.vocab_size to at least "
                        f"{tokenizer.vocab_size}")
    return tokenizer
