"""python -m mxfp4 (and torchrun -m mxfp4): the command line."""

from .cli import main

main()
