"""Prompts of the Shapes world: GenEval's templates with shapes in place of COCO classes.

Tags and templates (GenEval's six, then one harder tag):

| tag           | template                                                          |
|---------------|-------------------------------------------------------------------|
| single_object | a photo of a circle                                               |
| two_object    | a photo of a circle and a square                                  |
| counting      | a photo of three circles                                          |
| colors        | a photo of a red circle                                           |
| position      | a photo of a circle left of a square                              |
| color_attr    | a photo of a red circle and a blue square                         |
| relations3    | a photo of a red circle left of a blue square and a green triangle|
|               | below the blue square                                             |

Scene graphs list objects in the order of GenEval's include clauses: a relation's reference comes
before its subject, and `Relation(subject, relation, reference)` becomes the subject clause's
`"position": [relation, reference]`.

Held-out compositions: the shape-colour pairs in `HELDOUT_PAIRS` and the relation triples in
`HELDOUT_RELATIONS` (and their converses, such as "square right of circle" for "circle left of
square", which state the same picture) never occur in `split="train"` graphs.
"""

import numpy as np

from pstroke.errors import UserError
from pstroke.world.scene import COLORS, RELATIONS, SHAPES, ObjectSpec, Relation, SceneGraph

TAGS: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
    "relations3",
)
GENEVAL_TAGS: tuple[str, ...] = TAGS[:6]

# Tags whose prompts can contain a held-out composition (a coloured shape or a relation).
HELDOUT_TAGS: tuple[str, ...] = ("colors", "position", "color_attr", "relations3")

HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("circle", "green"),
    ("square", "pink"),
    ("triangle", "blue"),
    ("diamond", "orange"),
)
HELDOUT_RELATIONS: tuple[tuple[str, str, str], ...] = (
    ("circle", "left of", "square"),
    ("square", "above", "triangle"),
    ("triangle", "right of", "diamond"),
    ("diamond", "below", "circle"),
)

SPLITS = ("train", "heldout")

# GenEval's counting prompts use two to four objects.
NUMBERS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
_NUMBER_WORDS = {word: count for count, word in NUMBERS.items()}
_CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
_PLURALS = {shape + "s": shape for shape in SHAPES}
_PREFIX = ("a", "photo", "of")


def _vocabulary() -> list[str]:
    relation_words = sorted({word for relation in RELATIONS for word in relation.split()})
    return ["a", "an", "the", "photo", "of", "and", *NUMBERS.values(), *COLORS, *SHAPES, *_PLURALS, *relation_words]


VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(_vocabulary()))


# ---------------------------------------------------------------------------------------------
# Graph -> prompt and metadata.


def _noun_phrase(spec: ObjectSpec, determiner: str = "a") -> str:
    words = [spec.color] if spec.color else []
    if spec.count > 1:
        return " ".join([NUMBERS[spec.count], *words, spec.shape + "s"])
    if determiner == "a" and (words or [spec.shape])[0][0] in "aeiou":
        determiner = "an"
    return " ".join([determiner, *words, spec.shape])


def check_tag(graph: SceneGraph, tag: str) -> None:
    """Raise `UserError` unless `graph` has the structure of `tag` (object count, colours, relations)."""
    if tag not in TAGS:
        raise UserError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")
    objects, relations = graph.objects, graph.relations
    colored = [spec.color is not None for spec in objects]
    counts = [spec.count for spec in objects]
    expected = {
        "single_object": len(objects) == 1 and not any(colored) and counts == [1] and not relations,
        "two_object": len(objects) == 2 and not any(colored) and counts == [1, 1] and not relations,
        "counting": len(objects) == 1 and not any(colored) and counts[0] in NUMBERS and not relations,
        "colors": len(objects) == 1 and all(colored) and counts == [1] and not relations,
        "position": len(objects) == 2 and not any(colored) and counts == [1, 1]
        and [(r.subject, r.reference) for r in relations] == [(1, 0)],
        "color_attr": len(objects) == 2 and all(colored) and counts == [1, 1] and not relations,
        "relations3": len(objects) == 3 and all(colored) and counts == [1, 1, 1]
        and [(r.subject, r.reference) for r in relations] == [(1, 0), (2, 0)],
    }[tag]
    if not expected:
        raise UserError(f"scene graph {graph} does not have the structure of tag {tag!r}")


def prompt_for(graph: SceneGraph, tag: str) -> str:
    """Return the prompt of `graph` in the template of `tag` (see the module docstring)."""
    check_tag(graph, tag)
    objects = graph.objects
    statements = []
    mentioned: set[int] = set()
    for relation in graph.relations:
        reference = objects[relation.reference]
        determiner = "the" if relation.reference in mentioned else "a"
        statements.append(f"{_noun_phrase(objects[relation.subject])} {relation.relation} {_noun_phrase(reference, determiner)}")
        mentioned.update((relation.subject, relation.reference))
    for index, spec in enumerate(objects):
        if index not in mentioned:
            statements.append(_noun_phrase(spec))
    return "a photo of " + " and ".join(statements)


def composition_split(graph: SceneGraph) -> str:
    """Return "heldout" when `graph` contains a held-out pair or relation triple, else "train"."""
    pairs = {(spec.shape, spec.color) for spec in graph.objects if spec.color is not None}
    if pairs & set(HELDOUT_PAIRS):
        return "heldout"
    for relation in graph.relations:
        subject = graph.objects[relation.subject].shape
        reference = graph.objects[relation.reference].shape
        triples = {(subject, relation.relation, reference), (reference, _CONVERSE[relation.relation], subject)}
        if triples & set(HELDOUT_RELATIONS):
            return "heldout"
    return "train"


def include_clauses(graph: SceneGraph) -> list[dict]:
    """Return GenEval `include` clauses of `graph`: class, count, colour and position per spec."""
    include = []
    for index, spec in enumerate(graph.objects):
        clause: dict = {"class": spec.shape, "count": spec.count}
        if spec.color is not None:
            clause["color"] = spec.color
        for relation in graph.relations:
            if relation.subject == index:
                clause["position"] = [relation.relation, relation.reference]
        include.append(clause)
    return include


def to_metadata(graph: SceneGraph, tag: str) -> dict:
    """Return the GenEval JSONL object of `graph`: tag, include and exclude clauses, prompt.

    A relation becomes `"position": [relation, reference]` on its subject's clause, so each object
    may be the subject of one relation and its reference must come earlier. Counting prompts get
    GenEval's exclude clause with `count + 1`. The extra field `split` is "heldout" or
    "in_distribution" (see `composition_split`).
    """
    check_tag(graph, tag)
    metadata: dict = {"tag": tag, "include": include_clauses(graph)}
    if tag == "counting":
        metadata["exclude"] = [{"class": spec.shape, "count": spec.count + 1} for spec in graph.objects]
    metadata["prompt"] = prompt_for(graph, tag)
    metadata["split"] = "heldout" if composition_split(graph) == "heldout" else "in_distribution"
    return metadata


def graph_from_metadata(metadata: dict) -> SceneGraph:
    """Return the scene graph of a GenEval JSONL object (its include clauses).

    Raises:
      UserError: a clause is malformed or names a class, colour or relation outside the Shapes
        world (GenEval's own COCO classes, for example).
    """
    objects, relations = [], []
    clauses = metadata.get("include")
    if not isinstance(clauses, list) or not clauses:
        raise UserError(f"metadata {metadata!r} has no include clauses; expected a GenEval JSONL object")
    for index, clause in enumerate(clauses):
        if not isinstance(clause, dict) or "class" not in clause:
            raise UserError(f"include clause {clause!r} has no 'class'; expected {{'class': ..., 'count': ...}}")
        if clause["class"] not in SHAPES:
            raise UserError(
                f"class {clause['class']!r} is not a Shapes-world shape, so it cannot be drawn or detected; "
                f"the shapes are {', '.join(SHAPES)}"
            )
        color = clause.get("color")
        if color is not None and color not in COLORS:
            raise UserError(f"colour {color!r} is not in the Shapes-world palette {', '.join(COLORS)}")
        count = clause.get("count", 1)
        if not isinstance(count, int) or count < 1:
            raise UserError(f"count {count!r} of class {clause['class']!r} must be a positive integer")
        objects.append(ObjectSpec(clause["class"], color, count))
        if "position" in clause:
            relation, reference = clause["position"]
            if relation not in RELATIONS or not (isinstance(reference, int) and 0 <= reference < len(clauses)):
                raise UserError(f"position {clause['position']!r} must be [one of {RELATIONS}, an include index]")
            relations.append(Relation(index, relation, reference))
    return SceneGraph(tuple(objects), tuple(relations))


# ---------------------------------------------------------------------------------------------
# Prompt -> graph.


def _unknown_word(word: str, text: str) -> UserError:
    return UserError(f"unknown word {word!r} in prompt {text!r}; the vocabulary is: {', '.join(VOCABULARY)}")


def parse_prompt(text: str) -> SceneGraph:
    """Parse a prompt in one of the templates back into its scene graph.

    Raises:
      UserError: the prompt has a word outside `VOCABULARY` (the message names it and lists the
        vocabulary), or its words do not follow a template.
    """
    words = text.lower().replace(",", " ").split()
    for word in words:
        if word not in VOCABULARY:
            raise _unknown_word(word, text)
    if tuple(words[:3]) != _PREFIX:
        raise UserError(f"prompt {text!r} must start with 'a photo of'")

    objects: list[ObjectSpec] = []
    relations: list[Relation] = []
    position = 3

    def fail(expected: str) -> UserError:
        found = words[position] if position < len(words) else "the end of the prompt"
        return UserError(f"cannot parse prompt {text!r}: expected {expected} at word {position + 1}, found {found!r}")

    def noun_phrase() -> tuple[str, ObjectSpec]:
        nonlocal position
        if position >= len(words) or words[position] not in ("a", "an", "the", *_NUMBER_WORDS):
            raise fail("'a', 'an', 'the' or a number")
        determiner = words[position]
        position += 1
        color = None
        if position < len(words) and words[position] in COLORS:
            color = words[position]
            position += 1
        count = _NUMBER_WORDS.get(determiner, 1)
        expected_nouns = _PLURALS if count > 1 else {shape: shape for shape in SHAPES}
        if position >= len(words) or words[position] not in expected_nouns:
            raise fail("a plural shape" if count > 1 else "a shape")
        shape = expected_nouns[words[position]]
        position += 1
        return determiner, ObjectSpec(shape, color, count)

    def relation_words() -> str | None:
        nonlocal position
        for relation in RELATIONS:
            parts = relation.split()
            if words[position : position + len(parts)] == parts:
                position += len(parts)
                return relation
        return None

    def add(determiner: str, spec: ObjectSpec) -> int:
        if determiner == "the":
            if spec not in objects:
                raise UserError(f"invalid prompt {text!r}: 'the {spec.shape}' refers to an object not mentioned before it; use 'a {spec.shape}'")
            return objects.index(spec)
        objects.append(spec)
        return len(objects) - 1

    while True:
        subject = noun_phrase()
        relation = relation_words() if position < len(words) else None
        if relation is None:
            add(*subject)
        else:
            reference = noun_phrase()
            reference_index = add(*reference)
            subject_index = add(*subject)
            relations.append(Relation(subject_index, relation, reference_index))
        if position == len(words):
            break
        if words[position] != "and":
            raise fail("'and' or a relation")
        position += 1

    return SceneGraph(tuple(objects), tuple(relations))


def tag_of(graph: SceneGraph) -> str:
    """Return the first tag whose structure `graph` has.

    Raises:
      UserError: the graph fits no tag.
    """
    for tag in TAGS:
        try:
            check_tag(graph, tag)
        except UserError:
            continue
        return tag
    raise UserError(f"scene graph {graph} fits none of the tags {', '.join(TAGS)}")


# ---------------------------------------------------------------------------------------------
# Random graphs.


def _random_graph(tag: str, rng: np.random.Generator) -> SceneGraph:
    def shapes(n: int) -> list[str]:
        return [SHAPES[i] for i in rng.permutation(len(SHAPES))[:n]]

    def color() -> str:
        return COLORS[int(rng.integers(len(COLORS)))]

    def relation() -> str:
        return RELATIONS[int(rng.integers(len(RELATIONS)))]

    if tag == "single_object":
        return SceneGraph((ObjectSpec(shapes(1)[0], None),))
    if tag == "two_object":
        return SceneGraph(tuple(ObjectSpec(s, None) for s in shapes(2)))
    if tag == "counting":
        count = int(rng.choice(list(NUMBERS)))
        return SceneGraph((ObjectSpec(shapes(1)[0], None, count),))
    if tag == "colors":
        return SceneGraph((ObjectSpec(shapes(1)[0], color()),))
    if tag == "position":
        return SceneGraph(tuple(ObjectSpec(s, None) for s in shapes(2)), (Relation(1, relation(), 0),))
    if tag == "color_attr":
        return SceneGraph(tuple(ObjectSpec(s, color()) for s in shapes(2)))
    if tag == "relations3":
        objects = tuple(ObjectSpec(s, color()) for s in shapes(3))
        return SceneGraph(objects, (Relation(1, relation(), 0), Relation(2, relation(), 0)))
    raise UserError(f"unknown tag {tag!r}; expected one of {', '.join(TAGS)}")


def sample_graph(tag: str, rng: np.random.Generator, split: str = "train") -> SceneGraph:
    """Draw a random scene graph of `tag`.

    `split="train"` graphs contain no held-out composition; `split="heldout"` graphs contain at
    least one, which only the tags in `HELDOUT_TAGS` can.

    Raises:
      UserError: unknown tag or split, or a held-out graph requested for a tag that cannot have one.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if split == "heldout" and tag not in HELDOUT_TAGS:
        raise UserError(f"tag {tag!r} has no held-out compositions; held-out tags are {', '.join(HELDOUT_TAGS)}")
    while True:
        graph = _random_graph(tag, rng)
        if composition_split(graph) == split:
            return graph
