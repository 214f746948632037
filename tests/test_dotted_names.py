"""Every `mxfp4.x.y` named in the README, docs/ and the package's docstrings resolves to a real module or attribute,
so a renamed or removed module cannot linger in the text people read."""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"(?<![\w/.-])mxfp4(?:\.[A-Za-z_]\w*)+")


def resolve(name: str) -> bool:
    """Import the longest importable module prefix of ``name``, then walk the rest as attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def docstrings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return [doc for doc in (ast.get_docstring(n) for n in nodes) if doc]


def texts() -> dict[str, str]:
    found = {
        str(p.relative_to(ROOT)): p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    }
    for path in sorted((ROOT / "mxfp4").rglob("*.py")):
        found[str(path.relative_to(ROOT))] = "\n".join(docstrings(path))
    return found


def names_in(text: str) -> set[str]:
    # A trailing ".py" or ".md" belongs to a path, and a sentence's full stop is not part of the name.
    return {re.sub(r"\.(py|md|c)$", "", m.group(0)) for m in DOTTED.finditer(text)}


def test_the_pattern_finds_names_and_the_resolver_can_fail():
    assert names_in("see `mxfp4.convert.api.convert`. And mxfp4.layout") == {
        "mxfp4.convert.api.convert",
        "mxfp4.layout",
    }
    assert resolve("mxfp4.layout.hf_to_gguf") and resolve("mxfp4.codec.rules")
    assert not resolve("mxfp4.reference") and not resolve("mxfp4.model.routing") and not resolve("mxfp4.layout.nope")


@pytest.mark.parametrize("where", sorted(texts()))
def test_every_dotted_name_resolves(where):
    stale = sorted(name for name in names_in(texts()[where]) if not resolve(name))
    assert stale == [], f"{where} names {stale}"
