"""Runs llama.cpp's own convert_hf_to_gguf.py (from a llama.cpp source tree) on a checkpoint.

    python run_llama_cpp_converter.py LLAMA_CPP_DIR HF_DIR --outfile OUT.gguf

llama.cpp recognises a tokenizer's pre-tokenizer by hashing its output on a fixed text; the tiny test
tokenizers are not o200k, so that lookup is answered with gpt-oss's own pre-tokenizer name, 'gpt-4o'.
Nothing else of the converter is changed.
"""

import runpy
import sys

llama_cpp = sys.argv[1]
sys.path.insert(0, f"{llama_cpp}/gguf-py")
sys.path.insert(0, llama_cpp)
import conversion.base as base  # noqa: E402

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-4o"
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
runpy.run_path(f"{llama_cpp}/convert_hf_to_gguf.py", run_name="__main__")
