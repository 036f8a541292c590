"""Pictures shared by notebooks and the command line: sample grids, image rows, training curves.

The speed lab's own plots (roofline, speed against quality) are in :mod:`llmimg.speed.plots`.
"""

from __future__ import annotations

import textwrap
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from llmimg.core.data.shapes_world import Sample


def sample_grid(samples: Sequence[Sample], *, cols: int = 4, scale: int = 4, caption: str = "prompt",
                font_size: int = 11) -> Image.Image:
    """A grid of samples, each enlarged ``scale`` times (nearest neighbour) above its caption.

    ``caption`` is ``"prompt"``, ``"description"`` or ``"none"``. Deterministic: the same
    samples give the same pixels.
    """
    if caption not in ("prompt", "description", "none"):
        raise ValueError(f"caption must be 'prompt', 'description' or 'none', got {caption!r}")
    if not samples:
        raise ValueError("no samples to show")
    if cols <= 0 or scale <= 0:
        raise ValueError("cols and scale must be positive")
    size = samples[0].image.shape[0] * scale
    font = ImageFont.load_default(size=font_size)
    chars = max(8, int(size / (0.55 * font_size)))
    texts = [[] if caption == "none" else textwrap.wrap(getattr(s, caption), chars) for s in samples]
    line = font_size + 2
    text_h = max(len(t) for t in texts) * line + 6 if caption != "none" else 0
    pad = 6
    cols = min(cols, len(samples))
    rows = -(-len(samples) // cols)
    grid = Image.new("RGB", (cols * (size + pad) + pad, rows * (size + text_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    for k, (sample, lines) in enumerate(zip(samples, texts)):
        x = pad + (k % cols) * (size + pad)
        y = pad + (k // cols) * (size + text_h + pad)
        grid.paste(Image.fromarray(sample.image).resize((size, size), Image.NEAREST), (x, y))
        for j, text in enumerate(lines):
            draw.text((x, y + size + 3 + j * line), text, fill="black", font=font)
    return grid


def image_row(images: Iterable[np.ndarray], scale: int = 4, pad: int = 4) -> Image.Image:
    """Uint8 RGB images side by side, enlarged ``scale`` times, on a white background."""
    tiles = [Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST)
             for img in images]
    width = sum(t.width for t in tiles) + pad * (len(tiles) + 1)
    row = Image.new("RGB", (width, max(t.height for t in tiles) + 2 * pad), "white")
    x = pad
    for tile in tiles:
        row.paste(tile, (x, pad))
        x += tile.width + pad
    return row


def plot_history(history: list[dict[str, float]], *, title: str = "training loss", ax: Any = None,
                 log: bool = False) -> Any:
    """Plot a stage's training loss against the step (the ``history`` every trained stage keeps)."""
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("the history is empty: the model was not trained by llmimg (or not yet)")
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set(xlabel="step", ylabel="loss", title=title)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    return ax


def show_images(images: Any, captions: Sequence[str] | None = None, *, title: str | None = None,
                size: float = 1.3) -> Any:
    """Show images in one row with matplotlib (so ``llmimg reproduce`` collects the figure).

    ``images``: uint8 (H, W, 3) arrays, or float tensors/arrays (3, H, W) in [0, 1], or a
    batch of either. Returns the figure.
    """
    import matplotlib.pyplot as plt

    tiles = [_as_uint8(img) for img in images]
    if not tiles:
        raise ValueError("no images to show")
    fig, axes = plt.subplots(1, len(tiles), figsize=(size * len(tiles), size * 1.25), squeeze=False)
    for k, (ax, tile) in enumerate(zip(axes[0], tiles)):
        ax.imshow(tile, interpolation="nearest")
        ax.set_axis_off()
        if captions is not None:
            ax.set_title(captions[k], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    plt.show()
    return fig


def _as_uint8(image: Any) -> np.ndarray:
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if array.dtype == np.uint8:
        return array
    if array.ndim == 3 and array.shape[0] == 3:
        array = array.transpose(1, 2, 0)
    return (np.clip(array, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
