"""The atheris child: instruments mxfp4 for coverage and hands libFuzzer one target."""

import sys

import atheris

with atheris.instrument_imports(include=["mxfp4"]):
    from fuzz.targets import run_one, seeds


def main() -> None:
    target, corpus = sys.argv[1], sys.argv[2]
    from pathlib import Path

    for i, seed in enumerate(seeds(target)):
        (Path(corpus) / f"seed-{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], corpus] + sys.argv[3:], lambda data: run_one(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
