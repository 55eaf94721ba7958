"""Pictures: sample grids, quality-vs-steps and training curves (matplotlib Agg, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def grid_array(images: torch.Tensor, nrow: int, scale: int = 1, pad: int = 1) -> np.ndarray:
    """(N, 1|3, H, W) in [0, 1] -> uint8 (rows*H, cols*W[, 3]) with `pad` pixels of white between tiles."""
    images = images.detach().float().clamp(0, 1).cpu()
    if scale > 1:
        images = images.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    n, c, h, w = images.shape
    ncol = nrow
    rows = (n + ncol - 1) // ncol
    canvas = torch.ones(c, rows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, ncol)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    arr = (canvas.numpy() * 255).round().astype(np.uint8)
    return arr[0] if c == 1 else arr.transpose(1, 2, 0)


def writable_suffixes(scatter: bool) -> set[str]:
    """File suffixes save_scatter (matplotlib) or save_grid (Pillow) can write."""
    if scatter:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        return {f".{ext}" for ext in FigureCanvasAgg.get_supported_filetypes()}
    from PIL import Image

    return {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 10, scale: int | None = None) -> Path:
    from PIL import Image

    if scale is None:
        scale = max(1, 32 // images.shape[-1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid_array(images, nrow, scale)).save(path)
    return path


def plot_quality_vs_steps(series: dict[str, tuple[list[float], list[float]]], path: str | Path, ylabel: str = "FID",
                          title: str = "", hlines: dict[str, float] | None = None, logy: bool = True,
                          xlabel: str = "sampling steps", logx: bool = True) -> Path:
    """series: name -> (steps, values); hlines: name -> value (e.g. one-step student, real floor)."""
    fig, ax = _figure((6, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) <= 40 else None, label=name)
    styles = ["--", ":", "-."]
    for i, (name, v) in enumerate((hlines or {}).items()):
        ax.axhline(v, linestyle=styles[i % 3], color=f"C{len(series) + i}", label=name)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_scatter(points: torch.Tensor, labels: torch.Tensor, path: str | Path, title: str = "") -> Path:
    """2-D samples coloured by class."""
    fig, ax = _figure((4.5, 4.5))
    p = points.detach().float().cpu()
    ax.scatter(p[:, 0], p[:, 1], c=labels.cpu(), cmap="tab10", s=4, alpha=0.7)
    ax.set_aspect("equal")
    ax.set_title(title)
    return _save(fig, path)


def _figure(size: tuple[float, float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size, dpi=110)


def _save(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
