"""Hardware targets for `mxfp4 fit`: memory a model may use on each (device memory as the driver reports
it, less what the runtime keeps for itself)."""

from __future__ import annotations

from dataclasses import dataclass

MiB, GiB = 2**20, 2**30


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    memory_bytes: int  # what the device reports
    usable_fraction: float  # share of it a model may use (Apple GPUs may use only part of unified memory)
    runtime_reserve_bytes: int  # CUDA context, allocator slack, framework workspace (counted in the total)


CUDA_RESERVE = 1 * GiB  # context + cuBLAS/cuDNN workspaces + allocator fragmentation, typical of PyTorch / vLLM

TARGETS = {
    t.name: t
    for t in [
        Target("h200-141gb", "NVIDIA H200 141 GB", 143_771 * MiB, 1.0, CUDA_RESERVE),
        Target("h100-80gb", "NVIDIA H100 80 GB", 81_559 * MiB, 1.0, CUDA_RESERVE),
        Target("a100-80gb", "NVIDIA A100 80 GB", 81_920 * MiB, 1.0, CUDA_RESERVE),
        Target("a100-40gb", "NVIDIA A100 40 GB", 40_960 * MiB, 1.0, CUDA_RESERVE),
        Target("rtx-4090-24gb", "NVIDIA RTX 4090 24 GB", 24_564 * MiB, 1.0, CUDA_RESERVE),
        Target("rtx-4080-16gb", "NVIDIA RTX 4080 / 4080 SUPER 16 GB", 16_376 * MiB, 1.0, CUDA_RESERVE),
        Target("rtx-5080-16gb", "NVIDIA RTX 5080 16 GB", 16_303 * MiB, 1.0, CUDA_RESERVE),
        Target("laptop-16gb", "16 GB laptop GPU", 16_384 * MiB, 1.0, CUDA_RESERVE),
        # macOS lets the GPU wire about two thirds of unified memory up to 32 GB and three quarters above.
        Target("apple-m-16gb", "Apple M-series, 16 GB unified memory", 16 * GiB, 2 / 3, GiB // 2),
        Target("apple-m-32gb", "Apple M-series, 32 GB unified memory", 32 * GiB, 2 / 3, GiB // 2),
        Target("apple-m-64gb", "Apple M-series, 64 GB unified memory", 64 * GiB, 3 / 4, GiB // 2),
        Target("apple-m-128gb", "Apple M-series, 128 GB unified memory", 128 * GiB, 3 / 4, GiB // 2),
    ]
}
