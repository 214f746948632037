"""Where a checkpoint argument points: a local path, or a Hugging Face hub id resolved through
huggingface_hub's local cache (HF_HUB_CACHE / HF_HOME; works offline with HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import CheckpointError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(/[\w./-]+)?$")
DOWNLOAD_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.jinja",
    "*.txt",
    "*.model",
]  # never the multi-GB metal/ or .bin files


def resolve(spec: str | os.PathLike) -> Path:
    """A local path as is; 'org/name' or 'org/name/subfolder' from the hub cache (downloading when online)."""
    path = Path(spec)
    if path.exists():
        return path
    text = str(spec)
    if not HUB_ID.match(text) or text.startswith((".", "/")):
        raise CheckpointError(f"{text}: no such file or directory")
    parts = text.split("/")
    repo_id, subfolder = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = [f"{subfolder}/{p}" for p in DOWNLOAD_PATTERNS] if subfolder else DOWNLOAD_PATTERNS
    try:
        root = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise CheckpointError(
                f"{repo_id}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; download it first"
            ) from None
        try:
            root = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as error:  # network, auth, missing repo: say which
            raise CheckpointError(
                f"{repo_id}: not in the local cache and could not be downloaded ({type(error).__name__}: {error})"
            ) from None
    target = root / subfolder if subfolder else root
    if not target.exists():
        raise CheckpointError(f"{repo_id}: the cached snapshot {root} has no {subfolder!r}")
    return target
