"""A reference gpt-oss model that runs MXFP4 weights without inflating them.

import mxfp4.model
model = mxfp4.model.load("examples/tiny-gpt-oss")      # HF, bf16, original/, .gguf or hub id
logits = model(torch.tensor([[1, 2, 3]]))                # [B, T, vocab]
"""

from .loading import load
from .model import GptOss

__all__ = ["GptOss", "load"]
