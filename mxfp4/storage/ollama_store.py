"""Ollama's local model store: a model name (``gpt-oss:20b``, ``user/model:tag``) resolved to its weights blob.

Layout (ollama/ollama server/manifest): the root is ``$OLLAMA_MODELS`` or ``~/.ollama/models``; a manifest
``manifests/<host>/<namespace>/<model>/<tag>`` (host registry.ollama.ai and namespace library unless named) is
JSON whose layer with mediaType ``application/vnd.ollama.image.model`` names the GGUF blob by digest
``sha256:<hex>``, stored as ``blobs/sha256-<hex>`` without an extension.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import CheckpointError

PREFIX = "ollama:"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_HOST, DEFAULT_NAMESPACE, DEFAULT_TAG = "registry.ollama.ai", "library", "latest"
DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
NAME_PART = re.compile(r"^[A-Za-z0-9][\w.-]*$")


def models_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def manifest_path(root: Path, name: str) -> Path:
    """manifests/<host>/<namespace>/<model>/<tag> of a name 'model[:tag]', 'ns/model[:tag]' or 'host/ns/model[:tag]'."""
    base, _, tag = name.partition(":")
    parts = base.split("/")
    if not 1 <= len(parts) <= 3 or not all(NAME_PART.match(p) for p in parts + [tag or DEFAULT_TAG]):
        raise CheckpointError(f"{PREFIX}{name}: not an Ollama model name (model[:tag], namespace/model[:tag])")
    host, namespace = DEFAULT_HOST, DEFAULT_NAMESPACE
    if len(parts) == 3:
        host, namespace = parts[0], parts[1]
    elif len(parts) == 2:
        namespace = parts[0]
    return root / "manifests" / host / namespace / parts[-1] / (tag or DEFAULT_TAG)


def _model_name(relative: Path) -> str:
    """How Ollama names the model of manifests/<host>/<namespace>/<model>/<tag>."""
    host, namespace, model, tag = relative.parts
    if host != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    return f"{model}:{tag}" if namespace == DEFAULT_NAMESPACE else f"{namespace}/{model}:{tag}"


def resolve_ollama(spec: str) -> Path:
    """The weights blob of 'ollama:NAME' in the local Ollama store."""
    name = spec[len(PREFIX) :]
    root = models_root()
    manifest = manifest_path(root, name)
    if not manifest.is_file():
        manifests = root / "manifests"
        found = sorted(_model_name(p.relative_to(manifests)) for p in manifests.glob("*/*/*/*") if p.is_file())
        hint = f" (it holds: {', '.join(found)})" if found else " (set OLLAMA_MODELS if the store lives elsewhere)"
        raise CheckpointError(f"{spec}: no manifest {manifest} in the Ollama store {root}{hint}")
    try:
        layers = json.loads(manifest.read_text()).get("layers", [])
        digests = [layer["digest"] for layer in layers if layer.get("mediaType") == MODEL_MEDIA_TYPE]
    except (json.JSONDecodeError, AttributeError, TypeError, KeyError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{manifest}: not an Ollama manifest ({type(error).__name__}: {error})") from None
    if len(digests) != 1:
        raise CheckpointError(f"{manifest}: {len(digests)} model layers ({MODEL_MEDIA_TYPE}); expected one")
    match = DIGEST.match(str(digests[0]))
    if not match:  # never a path: a digest is 64 hex digits
        raise CheckpointError(f"{manifest}: model layer digest {digests[0]!r} is not sha256:<64 hex digits>")
    blob = root / "blobs" / f"sha256-{match.group(1)}"
    if not blob.is_file():
        raise CheckpointError(f"{spec}: the manifest {manifest} names blob {blob}, which is missing")
    return blob
