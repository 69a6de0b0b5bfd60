"""GenEval's clause rules applied to the detections of a Shapes-world image.

The rules follow GenEval's official evaluator (djghosh13/geneval, commit af4902f):

- A detection counts when its confidence is above 0.3, or above 0.9 for the `counting` tag. At
  most 16 detections per class are kept, the most confident first.
- `include` clause: at least `count` detections of `class`. Counting prompts add an `exclude`
  clause with `count + 1`, so they need exactly `count`.
- `color`: the `count` most confident detections of the class must all have that colour.
- `position: [relation, j]`: every pair of (one of the `count` most confident detections of this
  class, one of clause j's) must satisfy the relation under `relative_position`.
- `exclude` clause: fails the image when there are `count` or more detections of `class`.
"""

import dataclasses

import numpy as np

from pstroke.errors import UserError
from pstroke.world.detect import Detection, detect
from pstroke.world.scene import COLORS, SHAPES

SCORE_THRESHOLD = 0.3
COUNTING_THRESHOLD = 0.9
MAX_PER_CLASS = 16

# Fraction of the two boxes' summed sides by which each axis of the centre offset shrinks before
# the direction test.
POSITION_MARGIN = 0.1

Box = tuple[float, float, float, float]


@dataclasses.dataclass
class Verdict:
    """Whether an image satisfies its metadata, and why not (one clause failure per line)."""

    correct: bool
    reason: str


def relative_position(box: Box, reference: Box, margin: float = POSITION_MARGIN) -> tuple[float, float]:
    """Return GenEval's revised direction (dx, dy) from `reference` to `box`, both (x0, y0, x1, y1).

    Each axis of the centre offset shrinks toward 0 by `margin` x (sum of the two box sides on that
    axis), keeping its sign, and is divided by the full centre distance. "left of" holds when
    dx < -0.5, "right of" when dx > 0.5, "above" when dy < -0.5 and "below" when dy > 0.5 (y down).
    Boxes whose revised offset is 0 on both axes (within 1e-3 px) return (0, 0): no relation holds.
    """
    a = np.asarray(box, dtype=np.float64).reshape(2, 2)
    b = np.asarray(reference, dtype=np.float64).reshape(2, 2)
    offset = a.mean(axis=0) - b.mean(axis=0)
    sides = (a[1] - a[0]) + (b[1] - b[0])
    revised = np.maximum(np.abs(offset) - margin * sides, 0.0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return 0.0, 0.0
    dx, dy = revised / np.linalg.norm(offset)
    return float(dx), float(dy)


def relations_between(box: Box, reference: Box, margin: float = POSITION_MARGIN, threshold: float = 0.5) -> set[str]:
    """Return the relations ("left of", ...) that hold from `reference` to `box`."""
    dx, dy = relative_position(box, reference, margin)
    found = set()
    if dx < -threshold:
        found.add("left of")
    if dx > threshold:
        found.add("right of")
    if dy < -threshold:
        found.add("above")
    if dy > threshold:
        found.add("below")
    return found


def check_classes(metadata: dict) -> None:
    """Raise `UserError` when a clause names a class or colour the Shapes world cannot detect."""
    for clause in metadata.get("include", []) + metadata.get("exclude", []):
        if clause["class"] not in SHAPES:
            raise UserError(
                f"class {clause['class']!r} cannot be detected: the Shapes-world evaluator only detects "
                f"{', '.join(SHAPES)}; score COCO-class prompts with GenEval's own detector"
            )
        if clause.get("color") is not None and clause["color"] not in COLORS:
            raise UserError(
                f"colour {clause['color']!r} cannot be detected: the Shapes-world palette is {', '.join(COLORS)}"
            )


def group_detections(detections: list[Detection], threshold: float) -> dict[str, list[Detection]]:
    """Return the detections above `threshold` by shape, most confident first, at most 16 each."""
    groups: dict[str, list[Detection]] = {}
    for detection in sorted(detections, key=lambda d: -d.confidence):
        if detection.confidence <= threshold:
            continue
        group = groups.setdefault(detection.shape, [])
        if len(group) < MAX_PER_CLASS:
            group.append(detection)
    return groups


def judge_detections(detections: list[Detection], metadata: dict) -> Verdict:
    """Apply GenEval's clause rules for `metadata` (a GenEval JSONL object) to `detections`."""
    check_classes(metadata)
    threshold = COUNTING_THRESHOLD if metadata.get("tag") == "counting" else SCORE_THRESHOLD
    groups = group_detections(detections, threshold)
    reasons = []
    matched_groups: list[list[Detection] | None] = []

    for clause in metadata.get("include", []):
        name, count = clause["class"], clause["count"]
        found = groups.get(name, [])[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if clause.get("color") is not None:
                colors = [d.color for d in found]
                if colors.count(clause["color"]) < count:
                    matched = False
                    others = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors and c != clause["color"])
                    reasons.append(
                        f"expected {clause['color']} {name}>={count}, found {colors.count(clause['color'])} "
                        f"{clause['color']}" + (f"; and {others}" if others else "")
                    )
            if matched and clause.get("position") is not None:
                relation, target = clause["position"]
                target_group = matched_groups[target] if target < len(matched_groups) else None
                if target_group is None:
                    matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for detection in found:
                        for other in target_group:
                            held = relations_between(detection.box, other.box)
                            if relation not in held:
                                matched = False
                                seen = " and ".join(sorted(held)) or "no relation to"
                                reasons.append(f"expected {name} {relation} target, found {seen} target")
        matched_groups.append(found if matched else None)

    for clause in metadata.get("exclude", []):
        name, count = clause["class"], clause["count"]
        if len(groups.get(name, [])) >= count:
            reasons.append(f"expected {name}<{count}, found {len(groups[name])}")

    return Verdict(correct=not reasons, reason="\n".join(reasons) or "all clauses hold")


def judge(image: np.ndarray, metadata: dict) -> Verdict:
    """Detect the objects of `image` (uint8 [H, W, 3]) and judge them against `metadata`.

    Raises:
      UserError: a clause names a class or colour outside the Shapes world (for example a COCO
        class from GenEval's own prompts).
    """
    return judge_detections(detect(image), metadata)
