"""Fine-tunes back to MXFP4: LoRA adapters merged into any base checkpoint the converters read, written as
any of their targets, with a report of how much of each delta survived the output's rounding."""

from .merge import MergeResult, merge_lora

__all__ = ["MergeResult", "merge_lora"]
