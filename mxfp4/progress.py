"""Progress shown to people: a bytes progress bar and byte counts in binary units."""

from __future__ import annotations


class NoBar:
    """What progress_bar gives when it is off: the calls a bar takes, doing nothing (tqdm not imported: it costs
    ~40 ms of start-up, a tenth of a quiet command's)."""

    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int, enabled: bool, description: str):
    """A bytes progress bar (size, rate, ETA); tqdm shows it only on a terminal, so logs stay clean."""
    if not enabled:
        return NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=description,
        disable=None,  # None: only on a terminal
        leave=False,
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
