"""docs/cli.md is what `python -m mxfp4.cli.reference` writes from the commands: change a command, regenerate."""

from pathlib import Path

from mxfp4.cli.reference import reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_current():
    assert DOC.read_text() == reference(), "regenerate: python -m mxfp4.cli.reference > docs/cli.md"


def test_every_command_is_documented():
    text = reference()
    for command in ["convert", "verify", "merge-lora", "eval gate", "eval baseline", "eval ppl", "quantize"]:
        assert f"## `mxfp4 {command}`" in text
    assert "`--json`" in text.split("## `mxfp4 eval gate`")[1].split("## ")[0]
