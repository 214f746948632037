"""Writes examples/tiny-gpt-oss/: a small gpt-oss checkpoint in the openai / Hugging Face MXFP4 layout
(4 layers alternating sliding and full attention, 4 experts, top-2, byte-level BPE tokenizer), with
random weights. It is the README's bundled default for `mxfp4 convert`. Deterministic (seed 0).

Run: python examples/make_tiny_gpt_oss.py
"""

import shutil
from pathlib import Path

from mxfp4.testing import synthetic


def main() -> None:
    out = Path(__file__).with_name("tiny-gpt-oss")
    shutil.rmtree(out, ignore_errors=True)
    synthetic.write_checkpoint(out, synthetic.hf_config(), seed=0)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
