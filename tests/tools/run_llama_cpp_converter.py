"""Runs llama.cpp's own convert_hf_to_gguf.py (from a llama.cpp source tree) on a checkpoint.

    python run_llama_cpp_converter.py LLAMA_CPP_DIR HF_DIR --outfile OUT.gguf [--no-answer]

llama.cpp recognises a tokenizer's pre-tokenizer by hashing its output on a fixed text. The tiny test tokenizers
are learned here, so llama.cpp knows no hash of theirs; when (and only when) its lookup fails, it is answered with
their true pre-tokenizer, GPT-2's byte-level regex ('gpt-2'). With --no-answer nothing is answered: a checkpoint
carrying the real o200k_harmony tokenizer must be recognised by llama.cpp itself. Nothing else of the converter
is changed.
"""

import runpy
import sys

llama_cpp = sys.argv[1]
arguments = [a for a in sys.argv[2:] if a != "--no-answer"]
sys.path.insert(0, f"{llama_cpp}/gguf-py")
sys.path.insert(0, llama_cpp)
import conversion.base as base  # noqa: E402

if "--no-answer" not in sys.argv:
    lookup = base.TextModel.get_vocab_base_pre

    def answered(self, tokenizer):
        try:
            return lookup(self, tokenizer)
        except NotImplementedError:
            return "gpt-2"

    base.TextModel.get_vocab_base_pre = answered
sys.argv = ["convert_hf_to_gguf.py"] + arguments
runpy.run_path(f"{llama_cpp}/convert_hf_to_gguf.py", run_name="__main__")
