"""Progress shown to people: a bytes progress bar and byte counts in binary units."""

from __future__ import annotations


def progress_bar(total: int, enabled: bool, description: str):
    """A bytes progress bar (size, rate, ETA); tqdm shows it only on a terminal, so logs stay clean."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=description,
        disable=None if enabled else True,
        leave=False,
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
