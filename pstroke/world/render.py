"""Rasterise a `Layout` to an anti-aliased RGB canvas.

Pillow draws each shape on a canvas `SUPERSAMPLE` times larger, and `Image.reduce` box-filters it
down, so an edge pixel blends in the covered fraction of the object colour. The output depends only
on the layout (no randomness).
"""

import numpy as np
from PIL import Image, ImageDraw

from pstroke.world.scene import BACKGROUND, PALETTE, Layout

SUPERSAMPLE = 8


def shape_polygons(shape: str, center: tuple[float, float], size: float) -> list[list[tuple[float, float]]]:
    """Return the polygons (lists of (x, y) pixel vertices) that make up `shape`; a circle is not
    a polygon and is drawn separately."""
    x, y = center
    h = size / 2
    if shape == "square":
        return [[(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]]
    if shape == "triangle":
        return [[(x, y - h), (x + h, y + h), (x - h, y + h)]]
    if shape == "diamond":
        return [[(x, y - h), (x + h, y), (x, y + h), (x - h, y)]]
    raise ValueError(f"unknown shape {shape!r}")


def render(layout: Layout) -> np.ndarray:
    """Render `layout` to a uint8 array [canvas, canvas, 3] on the light background."""
    scale = SUPERSAMPLE
    image = Image.new("RGB", (layout.canvas * scale, layout.canvas * scale), BACKGROUND)
    draw = ImageDraw.Draw(image)

    for placed in layout.objects:
        fill = PALETTE[placed.color]
        center = (placed.center[0] * scale, placed.center[1] * scale)
        size = placed.size * scale
        if placed.shape == "circle":
            h = size / 2
            # Pillow's ellipse covers [x0, x1] inclusive, so the far edge is pulled in by one
            # supersampled pixel to keep the diameter equal to `size`.
            draw.ellipse([center[0] - h, center[1] - h, center[0] + h - 1, center[1] + h - 1], fill=fill)
            continue
        for polygon in shape_polygons(placed.shape, center, size):
            draw.polygon(polygon, fill=fill)

    return np.asarray(image.reduce(scale), dtype=np.uint8)
