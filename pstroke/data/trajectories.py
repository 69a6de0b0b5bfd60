"""Process-driven training trajectories on the Shapes world.

The three subsets follow the training data of Zhang et al. 2026 ("Think in Strokes, Not Pixels").

- `multi_turn`: the prompt's scene graph grows one object per step, references before the objects
  placed relative to them. Each step is a plan, the image of that state (the final layout restricted
  to the objects drawn so far) and an inspection. Some trajectories get one non-additive step
  (change a colour, swap two objects, remove a distractor) and still end on the prompt's image.
- `conflict_critique`: a plan that contradicts the prompt, then an inspection that names the error,
  a `<refine>` instruction and the corrected image. The error is a wrong colour, a wrong relation,
  or one object more than the prompt's count, which its exclude clause forbids. The "correct" kind
  is a partial trajectory whose not-yet-drawn objects are listed as still to add.
- `alignment_critique`: a correct plan whose image does not match it (wrong colour, extra object,
  missing object, wrong place). The inspection names the mismatch and a refinement corrects it.
  Matching steps are included too.

These are the symbolic sources. `critiques_from_rollout` is the self-sampled source: it judges a
model's rounds with the world's detector and judge and emits records in the same format.

A record is a JSON-compatible dict: `subset`, `kind`, `tag`, `prompt`, `metadata` (GenEval JSONL
object), `canvas`, `segments` (text segments with (text, stage) `parts`, image segments with a
stage and `expect` "consistent" or "wrong"), `ends` (False when cut before the end) and `error`
(the injected error of a wrong step). Records from `make_record` also carry `split`, `index` and `final`,
the prompt's full layout. Images are stored as the objects they show (shape, colour, centre, size,
spec index) and rendered on read, or as PNG bytes (base64) for rollout images.
"""

import base64
import dataclasses
import io

import numpy as np
from PIL import Image

from pstroke.data import grammar
from pstroke.world import detect as world_detect
from pstroke.world import judge as world_judge
from pstroke.world import layout as world_layout
from pstroke.world import prompts, render, scene

SUBSETS = ("multi_turn", "conflict_critique", "alignment_critique")
MAX_TRIES = 50


@dataclasses.dataclass(frozen=True)
class Step:
    """One additive or non-additive step: its instruction and every object drawn after it."""

    instruction: str
    objects: tuple[scene.PlacedObject, ...]


# ----------------------------------------------------------------------------------- objects


def object_to_json(placed: scene.PlacedObject) -> list:
    return [placed.shape, placed.color, float(placed.center[0]), float(placed.center[1]),
            float(placed.size), int(placed.spec_index)]


def object_from_json(item: list) -> scene.PlacedObject:
    shape, color, x, y, size, spec_index = item
    return scene.PlacedObject(shape, color, (x, y), size, spec_index)


def render_objects(objects, canvas: int) -> np.ndarray:
    """Render placed objects on an empty canvas of `canvas` pixels."""
    return render.render(scene.Layout(canvas, tuple(objects)))


def _overlaps(box_a, box_b, gap: float = 1.0) -> bool:
    return not (box_a[2] + gap <= box_b[0] or box_b[2] + gap <= box_a[0] or
                box_a[3] + gap <= box_b[1] or box_b[3] + gap <= box_a[1])


def _fits(placed: scene.PlacedObject, others, canvas: int) -> bool:
    """Return whether `placed` lies inside the canvas and clear of every object in `others`."""
    x0, y0, x1, y1 = placed.box
    if x0 < 0 or y0 < 0 or x1 > canvas or y1 > canvas:
        return False
    return not any(_overlaps(placed.box, other.box) for other in others)


def _free_spot(template: scene.PlacedObject, others, canvas: int, rng) -> scene.PlacedObject | None:
    """Return `template` moved to a random free place, or None if none was found."""
    half = template.size / 2
    for _ in range(MAX_TRIES):
        center = tuple(float(v) for v in rng.uniform(half, canvas - half, size=2))
        candidate = dataclasses.replace(template, center=center)
        if _fits(candidate, others, canvas):
            return candidate
    return None


def _placed_in_relation(placed: scene.PlacedObject, reference: scene.PlacedObject, relation: str, others,
                        canvas: int, rng) -> scene.PlacedObject | None:
    """Return `placed` moved to a random free place that is `relation` `reference` and not the
    opposite by the judge's position rule, or None if none was found."""
    for _ in range(MAX_TRIES):
        candidate = _free_spot(placed, others, canvas, rng)
        if candidate is None:
            continue
        found = world_judge.relations_between(candidate.box, reference.box)
        if relation in found and OPPOSITE[relation] not in found:
            return candidate
    return None


def _misplaced(placed: scene.PlacedObject, reference: scene.PlacedObject, relation: str, others, canvas: int,
               rng) -> tuple[scene.PlacedObject, str] | None:
    """Return `placed` moved to where another relation to `reference` is true and `relation` is
    not, together with that relation, or None. Any other relation qualifies because the canvas
    often has no room on the opposite side of the reference."""
    for wrong in rng.permutation([r for r in scene.RELATIONS if r != relation]):
        moved = _placed_in_relation(placed, reference, str(wrong), others, canvas, rng)
        if moved is not None and relation not in world_judge.relations_between(moved.box, reference.box):
            return moved, str(wrong)
    return None


OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# ------------------------------------------------------------------------------ scene graphs


def drawing_order(graph: scene.SceneGraph, layout: scene.Layout) -> list[int]:
    """Return layout object indices in drawing order: every reference spec before its subjects."""
    remaining = list(range(len(graph.objects)))
    ordered_specs = []
    while remaining:
        for spec in remaining:
            needs = {rel.reference for rel in graph.relations if rel.subject == spec}
            if needs <= set(ordered_specs):
                ordered_specs.append(spec)
                remaining.remove(spec)
                break
        else:  # a cycle of relations: keep the prompt order for the rest
            ordered_specs += remaining
            remaining = []
    return [index for spec in ordered_specs
            for index, placed in enumerate(layout.objects) if placed.spec_index == spec]


def state_graph(graph: scene.SceneGraph, objects) -> scene.SceneGraph:
    """Return the part of `graph` that `objects` draw: drawn specs with drawn counts (at most the
    prompt's), and relations between drawn specs. Objects outside the graph (spec index -1) are
    ignored."""
    counts = {}
    for placed in objects:
        if placed.spec_index >= 0:
            counts[placed.spec_index] = counts.get(placed.spec_index, 0) + 1
    kept = [spec for spec in range(len(graph.objects)) if spec in counts]
    new_index = {spec: index for index, spec in enumerate(kept)}
    specs = tuple(dataclasses.replace(graph.objects[spec], count=min(counts[spec], graph.objects[spec].count))
                  for spec in kept)
    relations = tuple(scene.Relation(new_index[rel.subject], rel.relation, new_index[rel.reference])
                      for rel in graph.relations if rel.subject in new_index and rel.reference in new_index)
    return scene.SceneGraph(specs, relations)


def state_metadata(graph: scene.SceneGraph, objects, tag: str) -> dict:
    """Return GenEval metadata that a state drawing `objects` consistently with `graph` satisfies.

    The clauses are those of `prompts.to_metadata` for the drawn part of the graph, which need not
    have the structure of `tag`. Each drawn spec gets a count clause with its colour and its
    relation to an earlier drawn spec. Counting prompts also get an exclude clause with count + 1.
    """
    partial = state_graph(graph, objects)
    metadata = {"tag": tag, "include": prompts.include_clauses(partial), "prompt": ""}
    if tag == "counting":
        metadata["exclude"] = [{"class": spec.shape, "count": spec.count + 1} for spec in partial.objects]
    return metadata


def missing_phrases(graph: scene.SceneGraph, objects) -> list[str]:
    """Return noun phrases of the prompt's objects that `objects` does not draw yet."""
    drawn = [sum(1 for placed in objects if placed.spec_index == spec) for spec in range(len(graph.objects))]
    return [grammar.noun_phrase(spec.shape, spec.color, spec.count - count)
            for spec, count in zip(graph.objects, drawn) if count < spec.count]


def _first_of_spec(objects, spec: int) -> scene.PlacedObject | None:
    return next((placed for placed in objects if placed.spec_index == spec), None)


def describe(graph: scene.SceneGraph, objects) -> str:
    """Return the whole-scene description of `objects`, with the prompt's relations between them."""
    if not objects:
        return "an empty canvas"
    groups: dict[tuple[str, str], int] = {}
    for placed in objects:
        groups[(placed.shape, placed.color)] = groups.get((placed.shape, placed.color), 0) + 1
    text = " and ".join(grammar.noun_phrase(shape, color, count) for (shape, color), count in groups.items())

    clauses = []
    for rel in graph.relations:
        subject, reference = _first_of_spec(objects, rel.subject), _first_of_spec(objects, rel.reference)
        if subject and reference:
            clauses.append(grammar.relation_clause(grammar.definite(subject.shape, subject.color), rel.relation,
                                                   grammar.definite(reference.shape, reference.color)))
    return " ; ".join([text] + clauses)


def inspect_text(graph: scene.SceneGraph, objects, last: bool = True) -> str:
    """Return the inspection of a consistent state: what is still to add, or that it is done.

    "the image matches the prompt" ends a trajectory, so a complete state that another step
    follows (`last` False, before a non-additive step) reads "still to add : nothing".
    """
    missing = missing_phrases(graph, objects)
    if missing or not last:
        return grammar.still_to_add(missing)
    return grammar.MATCHES_PROMPT


def add_instruction(graph: scene.SceneGraph, placed: scene.PlacedObject, drawn) -> str:
    """Return the instruction that adds `placed` after the objects `drawn`."""
    if any((other.spec_index, other.color) == (placed.spec_index, placed.color) for other in drawn):
        return f"add another {placed.color} {placed.shape}"
    text = f"add {grammar.noun_phrase(placed.shape, placed.color)}"
    for rel in graph.relations:
        reference = _first_of_spec(drawn, rel.reference)
        if rel.subject == placed.spec_index and reference:
            return f"{text} {rel.relation} {grammar.definite(reference.shape, reference.color)}"
    return text


def additive_steps(graph: scene.SceneGraph, layout: scene.Layout) -> list[Step]:
    """Return one step per object of `layout`, in `drawing_order`."""
    steps, drawn = [], []
    for index in drawing_order(graph, layout):
        placed = layout.objects[index]
        instruction = add_instruction(graph, placed, drawn)
        drawn.append(placed)
        steps.append(Step(instruction, tuple(drawn)))
    return steps

# ----------------------------------------------------------------------------- augmentation


def _augment_change(graph, steps: list[Step], canvas: int, rng) -> list[Step] | None:
    """Draw an object of a colour-free spec in another colour first, then change it."""
    candidates = [i for i, step in enumerate(steps) if graph.objects[step.objects[-1].spec_index].color is None]
    if not candidates:
        return None
    i = int(rng.choice(candidates))
    final = steps[i].objects[-1]
    used = {placed.color for placed in steps[-1].objects if placed.shape == final.shape}
    colors = [color for color in scene.COLORS if color not in used]
    if not colors:
        return None
    first = dataclasses.replace(final, color=str(rng.choice(colors)))
    drawn = tuple(o if o is not final else first for o in steps[i].objects)
    early = Step(add_instruction(graph, first, steps[i].objects[:-1]), drawn)
    change = Step(f"change {grammar.definite(first.shape, first.color)} to {final.color}", steps[i].objects)
    return steps[:i] + [early, change] + steps[i + 1:]


def _augment_swap(graph, steps: list[Step], canvas: int, rng) -> list[Step] | None:
    """Draw two unrelated, different-looking objects at each other's places, then swap them."""
    related = {rel.subject for rel in graph.relations} | {rel.reference for rel in graph.relations}
    final = steps[-1].objects
    pairs = [(a, b) for ia, a in enumerate(final) for b in final[ia + 1:]
             if a.spec_index not in related and b.spec_index not in related
             and (a.shape, a.color) != (b.shape, b.color)]
    if not pairs:
        return None
    a, b = pairs[int(rng.integers(len(pairs)))]
    moved_a, moved_b = dataclasses.replace(a, center=b.center), dataclasses.replace(b, center=a.center)
    others = [placed for placed in final if placed is not a and placed is not b]
    if not (_fits(moved_a, others + [moved_b], canvas) and _fits(moved_b, others, canvas)):
        return None

    i = max(steps.index(next(s for s in steps if a in s.objects)), steps.index(next(s for s in steps if b in s.objects)))
    swapped = []
    for step in steps[:i + 1]:
        swap_places = {id(a): moved_a, id(b): moved_b}
        objects = tuple(swap_places.get(id(placed), placed) for placed in step.objects)
        swapped.append(Step(step.instruction, objects))
    swap = Step(f"swap {grammar.definite(a.shape, a.color)} and {grammar.definite(b.shape, b.color)}",
                steps[i].objects)
    return swapped + [swap] + steps[i + 1:]


def _distractor(graph, final, canvas: int, rng) -> scene.PlacedObject | None:
    """Return an object of a shape the prompt does not mention, at a free place, or None."""
    shapes = [shape for shape in scene.SHAPES if shape not in {spec.shape for spec in graph.objects}]
    if not shapes:
        return None
    template = dataclasses.replace(final[0], shape=str(rng.choice(shapes)), color=str(rng.choice(scene.COLORS)),
                                   spec_index=-1)
    return _free_spot(template, final, canvas, rng)


def _augment_remove(graph, steps: list[Step], canvas: int, rng) -> list[Step] | None:
    """Add an object the prompt does not mention, then remove it."""
    extra = _distractor(graph, steps[-1].objects, canvas, rng)
    if extra is None:
        return None
    i = int(rng.integers(len(steps)))
    add = Step(f"add {grammar.noun_phrase(extra.shape, extra.color)}", steps[i].objects + (extra,))
    remove = Step(f"remove {grammar.definite(extra.shape, extra.color)}", steps[i].objects)
    return steps[:i + 1] + [add, remove] + steps[i + 1:]


AUGMENTATIONS = {"change": _augment_change, "swap": _augment_swap, "remove": _augment_remove}


# ------------------------------------------------------------------------------ records


def _image(objects, stage: str, expect: str) -> dict:
    return {"type": "image", "stage": stage, "expect": expect, "objects": [object_to_json(o) for o in objects]}


def _text(*parts: tuple[str, str]) -> dict:
    return {"type": "text", "parts": [list(part) for part in parts]}


def _record(subset: str, kind: str, tag: str, prompt: str, graph, canvas: int, segments: list[dict],
            ends: bool, error: dict | None = None) -> dict:
    return {"subset": subset, "kind": kind, "tag": tag, "prompt": prompt,
            "metadata": prompts.to_metadata(graph, tag), "canvas": canvas,
            "segments": [_text((grammar.prompt_text(prompt), "prompt"))] + segments,
            "ends": ends, "error": error}


def _round(graph, step: Step, last: bool = True) -> list[dict]:
    """Return the plan, image and inspection segments of a consistent step."""
    return [_text((grammar.plan(step.instruction, describe(graph, step.objects)), "plan")),
            _image(step.objects, "draft_image", "consistent"),
            _text((inspect_text(graph, step.objects, last), "inspect"))]


def _rounds(graph, steps: list[Step], complete: bool) -> list[dict]:
    """Return the rounds of `steps`. With `complete`, the last round ends the trajectory."""
    return [segment for i, step in enumerate(steps)
            for segment in _round(graph, step, last=complete and i == len(steps) - 1)]


def multi_turn(graph, tag: str, layout: scene.Layout, rng, augment_fraction: float, max_images: int) -> dict | None:
    """Return a multi-turn record, or None when the layout needs more than `max_images` steps."""
    steps = additive_steps(graph, layout)
    kind = "additive"
    if rng.random() < augment_fraction:
        for name in rng.permutation(list(AUGMENTATIONS)):
            augmented = AUGMENTATIONS[name](graph, steps, layout.canvas, rng)
            if augmented is not None and len(augmented) <= max_images:
                steps, kind = augmented, f"augmented_{name}"
                break
    if len(steps) > max_images:
        return None

    segments = _rounds(graph, steps, complete=True)
    return _record("multi_turn", kind, tag, prompts.prompt_for(graph, tag), graph, layout.canvas, segments, ends=True)


# -------------------------------------------------------------------------------- critiques


def _wrong_color(obj: scene.PlacedObject, expected: str, final, rng) -> str | None:
    """Return a colour other than `expected` that no other object of the same shape has."""
    used = {placed.color for placed in final if placed.shape == obj.shape} | {expected}
    colors = [color for color in scene.COLORS if color not in used]
    return str(rng.choice(colors)) if colors else None


def _single_relation(graph, spec: int):
    relations = [rel for rel in graph.relations if rel.subject == spec]
    return relations[0] if len(relations) == 1 else None


def _conflict_options(graph, steps: list[Step], canvas: int, rng) -> list[tuple]:
    """Return (step index, wrong state, wrong instruction, inspection, refine, error) candidates."""
    final = steps[-1].objects
    options = []
    for i, step in enumerate(steps):
        obj, before = step.objects[-1], step.objects[:-1]
        spec = graph.objects[obj.spec_index]
        first_instance = _first_of_spec(before, obj.spec_index) is None

        wrong = _wrong_color(obj, spec.color, final, rng) if spec.color else None
        if wrong:
            bad = dataclasses.replace(obj, color=wrong)
            options.append((i, before + (bad,), add_instruction(graph, bad, before),
                            f"the plan conflicts with the prompt : the {obj.shape} should be {spec.color} , not {wrong}",
                            f"change the {wrong} {obj.shape} to {spec.color}",
                            {"kind": "color", "shape": obj.shape, "expected": spec.color, "got": wrong}))

        rel = _single_relation(graph, obj.spec_index)
        reference = _first_of_spec(before, rel.reference) if rel else None
        misplaced = _misplaced(obj, reference, rel.relation, before, canvas, rng) if first_instance and reference else None
        if misplaced is not None:
            bad, wrong_relation = misplaced
            subject_text, reference_text = grammar.definite(obj.shape, obj.color), grammar.definite(reference.shape, reference.color)
            options.append((i, before + (bad,),
                            f"add {grammar.noun_phrase(obj.shape, obj.color)} {wrong_relation} {reference_text}",
                            f"the plan conflicts with the prompt : {subject_text} should be {rel.relation} "
                            f"{reference_text} , not {wrong_relation} it",
                            f"move {subject_text} {rel.relation} {reference_text}",
                            {"kind": "relation", "shape": obj.shape, "expected": rel.relation, "got": wrong_relation}))

        drawn = sum(1 for placed in step.objects if placed.spec_index == obj.spec_index)
        if spec.count >= 2 and drawn == spec.count and spec.count + 1 < len(grammar.NUMBER_WORDS):
            extra = _free_spot(obj, final, canvas, rng)
            if extra is not None:
                options.append((i, step.objects + (extra,),
                                f"add two more {obj.color} {grammar.plural(obj.shape)}",
                                f"the plan conflicts with the prompt : the prompt asks for "
                                f"{grammar.noun_phrase(spec.shape, spec.color, spec.count)} , not "
                                f"{grammar.NUMBER_WORDS[spec.count + 1]}",
                                f"remove the extra {obj.color} {obj.shape}",
                                {"kind": "count", "shape": obj.shape, "expected": spec.count, "got": spec.count + 1}))
    return options


def _alignment_options(graph, steps: list[Step], canvas: int, rng) -> list[tuple]:
    """Return (step index, wrong image state, inspection, refine, error) candidates."""
    final = steps[-1].objects
    options = []
    for i, step in enumerate(steps):
        obj, before = step.objects[-1], step.objects[:-1]
        mismatch = "the image does not match the plan :"

        wrong = _wrong_color(obj, obj.color, final, rng)
        if wrong:
            options.append((i, before + (dataclasses.replace(obj, color=wrong),),
                            f"{mismatch} the {obj.shape} is {wrong} , not {obj.color}",
                            f"change the {wrong} {obj.shape} to {obj.color}",
                            {"kind": "color", "shape": obj.shape, "expected": obj.color, "got": wrong}))

        extra = _distractor(graph, final, canvas, rng)
        if extra is not None:
            options.append((i, step.objects + (extra,),
                            f"{mismatch} there is an extra {extra.color} {extra.shape}",
                            f"remove the {extra.color} {extra.shape}",
                            {"kind": "extra", "shape": extra.shape, "expected": None, "got": extra.color}))

        options.append((i, before, f"{mismatch} {grammar.noun_phrase(obj.shape, obj.color)} is missing",
                        step.instruction, {"kind": "missing", "shape": obj.shape, "expected": obj.color, "got": None}))

        rel = _single_relation(graph, obj.spec_index)
        reference = _first_of_spec(before, rel.reference) if rel else None
        misplaced = _misplaced(obj, reference, rel.relation, before, canvas, rng) \
            if reference and _first_of_spec(before, obj.spec_index) is None else None
        if misplaced is not None:
            bad, wrong_relation = misplaced
            subject_text, reference_text = grammar.definite(obj.shape, obj.color), grammar.definite(reference.shape, reference.color)
            options.append((i, before + (bad,),
                            f"{mismatch} {subject_text} is {wrong_relation} {reference_text} , not {rel.relation} it",
                            f"move {subject_text} {rel.relation} {reference_text}",
                            {"kind": "place", "shape": obj.shape, "expected": rel.relation, "got": wrong_relation}))
    return options


def _pick_by_kind(options: list[tuple], rng) -> tuple:
    """Pick an error kind uniformly among those available, then one of its options, so that rare
    kinds (a relation needs a related pair) are not crowded out by kinds possible at every step."""
    kinds = sorted({option[-1]["kind"] for option in options})
    kind = kinds[int(rng.integers(len(kinds)))]
    matching = [option for option in options if option[-1]["kind"] == kind]
    return matching[int(rng.integers(len(matching)))]


def _critique_tail(graph, step: Step, inspection: str, correction: str) -> list[dict]:
    """Return the inspection with its correction, the corrected image and its inspection."""
    return [_text((inspection, "inspect"), (grammar.refine(correction), "refine")),
            _image(step.objects, "refined_image", "consistent"),
            _text((inspect_text(graph, step.objects), "inspect"))]


def _partial(subset: str, kind: str, graph, tag, layout, steps: list[Step], rng) -> dict:
    """Return a correct trajectory cut after a random step, preferring unfinished states."""
    last = int(rng.integers(1, len(steps))) if len(steps) > 1 else 1
    segments = _rounds(graph, steps[:last], complete=last == len(steps))
    return _record(subset, kind, tag, prompts.prompt_for(graph, tag), graph, layout.canvas, segments,
                   ends=last == len(steps))


def conflict_critique(graph, tag: str, layout: scene.Layout, rng, wrong: bool) -> dict | None:
    """Return a conflict-critique record ("wrong" or "correct"), or None if no error applies."""
    steps = additive_steps(graph, layout)
    if not wrong:
        return _partial("conflict_critique", "correct", graph, tag, layout, steps, rng)

    options = _conflict_options(graph, steps, layout.canvas, rng)
    if not options:
        return None
    i, bad_objects, instruction, inspection, correction, error = _pick_by_kind(options, rng)
    segments = _rounds(graph, steps[:i], complete=False)
    segments += [_text((grammar.plan(instruction, describe(graph, bad_objects)), "plan")),
                 _image(bad_objects, "draft_image", "wrong")]
    segments += _critique_tail(graph, steps[i], inspection, correction)
    return _record("conflict_critique", "wrong", tag, prompts.prompt_for(graph, tag), graph, layout.canvas,
                   segments, ends=i == len(steps) - 1, error=error)


def alignment_critique(graph, tag: str, layout: scene.Layout, rng, mismatch: bool) -> dict | None:
    """Return an alignment-critique record ("mismatch" or "match")."""
    steps = additive_steps(graph, layout)
    if not mismatch:
        return _partial("alignment_critique", "match", graph, tag, layout, steps, rng)

    options = _alignment_options(graph, steps, layout.canvas, rng)
    i, bad_objects, inspection, correction, error = _pick_by_kind(options, rng)
    segments = _rounds(graph, steps[:i], complete=False)
    segments += [_text((grammar.plan(steps[i].instruction, describe(graph, steps[i].objects)), "plan")),
                 _image(bad_objects, "draft_image", "wrong")]
    segments += _critique_tail(graph, steps[i], inspection, correction)
    return _record("alignment_critique", "mismatch", tag, prompts.prompt_for(graph, tag), graph, layout.canvas,
                   segments, ends=i == len(steps) - 1, error=error)


# ------------------------------------------------------------------------------- sampling

SPLITS = ("train", "validation", "heldout")


def make_record(data_config, canvas: int, split: str, index: int) -> dict:
    """Return record `index` of `split`; the same arguments always give the same record.

    The subset follows the configured weights; "heldout" draws the world's held-out compositions,
    "train" and "validation" the training compositions with disjoint random streams.
    """
    rng = np.random.default_rng([data_config.seed, SPLITS.index(split), index])
    weights = np.array([data_config.multi_turn_weight, data_config.conflict_weight, data_config.alignment_weight])
    subset = SUBSETS[int(rng.choice(len(SUBSETS), p=weights / weights.sum()))]
    compositions = "heldout" if split == "heldout" else "train"
    wrong = rng.random() < (data_config.conflict_wrong_fraction if subset == "conflict_critique"
                            else data_config.alignment_mismatch_fraction)

    for _ in range(MAX_TRIES):
        tag = str(rng.choice(prompts.HELDOUT_TAGS if split == "heldout" else prompts.TAGS))
        graph = prompts.sample_graph(tag, rng, split=compositions)
        if sum(spec.count for spec in graph.objects) > data_config.max_images:
            continue
        try:
            layout = world_layout.sample_layout(graph, canvas, rng)
        except world_layout.Unsatisfiable:
            continue
        if subset == "multi_turn":
            record = multi_turn(graph, tag, layout, rng, data_config.augment_fraction, data_config.max_images)
        elif subset == "conflict_critique":
            record = conflict_critique(graph, tag, layout, rng, wrong)
        else:
            record = alignment_critique(graph, tag, layout, rng, wrong)
        if record is not None:
            record.update(split=split, index=index, final=[object_to_json(o) for o in layout.objects])
            return record
    raise RuntimeError(f"no {subset} trajectory found in {MAX_TRIES} tries for {split} record {index}")


def decode_image(segment: dict, canvas: int) -> np.ndarray:
    """Return the uint8 [canvas, canvas, 3] pixels of an image segment of a record."""
    if "png" in segment:
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(segment["png"]))).convert("RGB"))
    return render_objects([object_from_json(item) for item in segment["objects"]], canvas)


def image_count(record: dict) -> int:
    """Return the number of generated images in a record."""
    return sum(1 for segment in record["segments"] if segment["type"] == "image")


# --------------------------------------------------------------------- self-sampled critiques


def _detections_to_objects(detections, graph) -> list[scene.PlacedObject]:
    """Turn detections into placed objects, each matched to the first unfilled spec of its shape
    whose colour agrees or is free. Unmatched detections get spec index -1."""
    used = [0] * len(graph.objects)
    objects = []
    for found in sorted(detections, key=lambda d: -d.confidence):
        x0, y0, x1, y1 = found.box
        spec_index = -1
        for index, spec in enumerate(graph.objects):
            if spec.shape == found.shape and spec.color in (None, found.color) and used[index] < spec.count:
                spec_index = index
                used[index] += 1
                break
        objects.append(scene.PlacedObject(found.shape, found.color, ((x0 + x1) / 2, (y0 + y1) / 2),
                                          max(x1 - x0, y1 - y0), spec_index))
    return objects


def find_problem(graph, objects, image: np.ndarray, tag: str) -> tuple[str, str, list] | None:
    """Return (inspection, correction, corrected objects) for the first way `objects` contradict
    `graph`, or None when the state is consistent (objects still missing are no error)."""
    for placed in objects:
        if placed.spec_index >= 0:
            continue
        same_shape = [spec for spec in graph.objects if spec.shape == placed.shape]
        kept = [other for other in objects if other is not placed]
        if same_shape and all(spec.color for spec in same_shape) and \
                sum(o.shape == placed.shape for o in objects) <= sum(spec.count for spec in same_shape):
            expected = same_shape[0].color
            fixed = [dataclasses.replace(placed, color=expected, spec_index=graph.objects.index(same_shape[0]))
                     if other is placed else other for other in objects]
            return (f"the image conflicts with the prompt : the {placed.shape} should be {expected} , not {placed.color}",
                    f"change the {placed.color} {placed.shape} to {expected}", fixed)
        if same_shape:
            spec = same_shape[0]
            return (f"the image conflicts with the prompt : the prompt asks for "
                    f"{grammar.noun_phrase(spec.shape, spec.color, spec.count)} , not "
                    f"{grammar.NUMBER_WORDS[min(10, sum(o.shape == placed.shape for o in objects))]}",
                    f"remove the extra {placed.color} {placed.shape}", kept)
        return (f"the image conflicts with the prompt : there is an extra {placed.color} {placed.shape}",
                f"remove the {placed.color} {placed.shape}", kept)

    verdict = world_judge.judge(image, state_metadata(graph, objects, tag))
    if verdict.correct:
        return None
    for rel in graph.relations:
        subject, reference = _first_of_spec(objects, rel.subject), _first_of_spec(objects, rel.reference)
        if subject is None or reference is None:
            continue
        subject_box, reference_box = subject.box, reference.box
        if rel.relation in world_judge.relations_between(subject_box, reference_box):
            continue
        subject_text, reference_text = grammar.definite(subject.shape, subject.color), grammar.definite(reference.shape, reference.color)
        others = [other for other in objects if other is not subject]
        moved = _placed_in_relation(subject, reference, rel.relation, others, image.shape[0], np.random.default_rng(0))
        if moved is None:
            break
        return (f"the image conflicts with the prompt : {subject_text} is not {rel.relation} {reference_text}",
                f"move {subject_text} {rel.relation} {reference_text}",
                [moved if other is subject else other for other in objects])
    return (f"the image conflicts with the prompt : {verdict.reason}", "", list(objects))


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def critiques_from_rollout(metadata: dict, rounds: list[tuple[str, np.ndarray]]) -> list[dict]:
    """Judge a rollout's rounds and return conflict-critique records in the symbolic format.

    `rounds` are the model's (plan text, image) pairs in order. Each consistent round up to the
    first problem gives a "correct" record that ends with its inspection. The first round that
    contradicts the prompt gives a "wrong" record with the inspection, a `<refine>` instruction
    and the corrected image, which is the detected objects fixed and rendered. Later rounds depend
    on the faulty one and are dropped.
    """
    graph = prompts.graph_from_metadata(metadata)
    tag, prompt = metadata["tag"], metadata["prompt"]
    records, history = [], []
    for plan_text, image in rounds:
        canvas = image.shape[0]
        objects = _detections_to_objects(world_detect.detect(image), graph)
        plan_segment = _text((plan_text, "plan"))
        image_segment = {"type": "image", "stage": "draft_image", "png": _png(image)}
        problem = find_problem(graph, objects, image, tag)

        if problem is None or not problem[1]:
            if problem is not None:
                break  # NOTE: a judge failure with no located cause gives no critique.
            image_segment["expect"] = "consistent"
            inspection = _text((inspect_text(graph, objects), "inspect"))
            segments = history + [plan_segment, image_segment, inspection]
            done = not missing_phrases(graph, objects)
            records.append(_record("conflict_critique", "correct", tag, prompt, graph, canvas, segments, ends=done)
                           | {"source": "self_sampled"})
            history = segments
            if done:
                break
            continue

        inspection, correction, fixed = problem
        image_segment["expect"] = "wrong"
        corrected = _image(fixed, "refined_image", "consistent")
        tail = [_text((inspection, "inspect"), (grammar.refine(correction), "refine")), corrected,
                _text((inspect_text(graph, fixed), "inspect"))]
        records.append(_record("conflict_critique", "wrong", tag, prompt, graph, canvas,
                               history + [plan_segment, image_segment] + tail,
                               ends=not missing_phrases(graph, fixed), error={"kind": "self_sampled"})
                       | {"source": "self_sampled"})
        break
    return records
