"""Compile every Triton kernel of mxfp4 for an NVIDIA architecture without a GPU (Triton ships ptxas),
so that a kernel that would not build on an H100 fails here, not on the first GPU that meets it.

    python tests/tools/compile_kernels.py 90     # sm_90 (H100, H200); 80 for A100

Must run without TRITON_INTERPRET (which replaces the kernels by interpreted functions). Prints one
line per compiled variant with its shared memory and, from Triton's bundled cuobjdump, its registers and
stack (stack > 0: registers spilled to local memory)."""

import os
import re
import subprocess
import sys
import tempfile
from itertools import product

if os.environ.get("TRITON_INTERPRET") == "1":
    sys.exit("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mxfp4.codec import triton_codec
from mxfp4.model.kernels import attention_triton, moe_torch, moe_triton

C = "constexpr"


def variants():
    """(name, kernel, signature, constexprs, num_warps, launched): each dtype and each tile the launchers
    can choose (launched=True) or that bench_kernels --sweep may try (False)."""
    routing = dict(
        order_ptr="*i32",
        tile_expert_ptr="*i32",
        tile_start_ptr="*i32",
        tile_end_ptr="*i32",
        blocks_ptr="*u8",
        scales_ptr="*u8",
    )
    for dt in ("bf16", "fp32"):
        precision = "ieee" if dt == "fp32" else "tf32"
        moe_tiles = [
            ((16, 64, 64), True),
            ((32, 64, 64), True),
            ((64, 64, 64), True),
            ((128, 32, 64), True),
        ]  # moe_triton.block_sizes
        moe_tiles += [((64, 128, 256), False)] if dt == "bf16" else []  # the largest tile the sweep tries
        for (block_m, block_n, block_k), launched in moe_tiles:
            tiles = dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, PRECISION=precision)
            yield (
                f"moe gate_up {dt} tile {block_m}x{block_n}x{block_k}",
                moe_triton._gate_up_kernel,
                dict(
                    x_ptr=f"*{dt}",
                    **routing,
                    bias_ptr=f"*{dt}",
                    act_ptr=f"*{dt}",
                    H="i32",
                    I="i32",
                    num_experts="i32",
                    limit="fp32",
                    ALPHA=C,
                    TOPK=C,
                    BLOCK_M=C,
                    BLOCK_N=C,
                    BLOCK_K=C,
                    PRECISION=C,
                ),
                dict(tiles, ALPHA=moe_torch.SWIGLU_ALPHA, TOPK=4),
                moe_triton.NUM_WARPS,
                launched,
            )
            yield (
                f"moe down {dt} tile {block_m}x{block_n}x{block_k}",
                moe_triton._down_kernel,
                dict(
                    act_ptr=f"*{dt}",
                    order_ptr="*i32",
                    scores_ptr=f"*{dt}",
                    tile_expert_ptr="*i32",
                    tile_start_ptr="*i32",
                    tile_end_ptr="*i32",
                    blocks_ptr="*u8",
                    scales_ptr="*u8",
                    bias_ptr=f"*{dt}",
                    y_ptr="*fp32",
                    H="i32",
                    I="i32",
                    num_experts="i32",
                    BLOCK_M=C,
                    BLOCK_N=C,
                    BLOCK_K=C,
                    PRECISION=C,
                ),
                tiles,
                moe_triton.NUM_WARPS,
                launched,
            )
        yield (
            f"moe top-k sum {dt}",
            moe_triton._top_k_sum_kernel,
            dict(y_ptr="*fp32", out_ptr=f"*{dt}", H="i32", TOPK=C, BLOCK=C),
            dict(TOPK=4, BLOCK=256),
            4,
            True,
        )
        for final, ring, block_m in product(
            (True, False), (True, False), (16, 32, 64)
        ):  # the launcher's row tiles; 64 keys a step
            yield (
                f"attention {dt} final={final} ring={ring} tile {block_m}x64",
                attention_triton._attention_kernel,
                dict(
                    q_ptr=f"*{dt}",
                    k_ptr=f"*{dt}",
                    v_ptr=f"*{dt}",
                    sinks_ptr=f"*{dt}",
                    out_ptr=f"*{dt}" if final else "*fp32",
                    m_ptr="*fp32",
                    l_ptr="*fp32",
                    T="i32",
                    S="i32",
                    q_start="i32",
                    q_start_ptr="*i64",
                    window="i64",
                    scale_log2="fp32",
                    keys_per_split="i32",
                    HEADS=C,
                    KV_HEADS=C,
                    G=C,
                    D=C,
                    BLOCK_D=C,
                    BLOCK_M=C,
                    BLOCK_N=C,
                    FINAL=C,
                    RING=C,
                    PRECISION=C,
                ),
                dict(
                    HEADS=64,
                    KV_HEADS=8,
                    G=8,
                    D=64,
                    BLOCK_D=64,
                    BLOCK_M=block_m,
                    BLOCK_N=64,
                    FINAL=final,
                    RING=ring,
                    PRECISION=precision,
                ),
                attention_triton.NUM_WARPS,
                True,
            )
        yield (
            f"codec encode {dt}",
            triton_codec._encode_kernel,
            dict(x_ptr=f"*{dt}", blocks_ptr="*u8", scales_ptr="*u8", n_blocks="i32", RULE=C, ROUNDING=C, BPP=C),
            dict(RULE=0, ROUNDING=0, BPP=triton_codec.BLOCKS_PER_PROGRAM),
            4,
            True,
        )
        yield (
            f"codec decode {dt}",
            triton_codec._decode_kernel,
            dict(blocks_ptr="*u8", scales_ptr="*u8", out_ptr=f"*{dt}", n_blocks="i32", NAN_BITS=C, OUT_BF16=C, BPP=C),
            dict(
                NAN_BITS=0x7FC0 if dt == "bf16" else 0x7FC00000,
                OUT_BF16=dt == "bf16",
                BPP=triton_codec.BLOCKS_PER_PROGRAM,
            ),
            4,
            True,
        )


def resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread: > 0 means spills to local memory) from cuobjdump."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    return int(found.group(1)), int(found.group(2))


def main(arch: int) -> None:
    target = GPUTarget("cuda", arch, 32)
    for name, kernel, signature, constants, warps, launched in variants():
        compiled = triton.compile(
            ASTSource(fn=kernel, signature=signature, constexprs=constants), target=target, options={"num_warps": warps}
        )
        registers, stack = resource_usage(compiled.asm["cubin"])
        print(
            f"sm_{arch} {name}: compiled, {compiled.metadata.shared} bytes of shared memory, {registers} registers, "
            f"{stack} bytes of stack, {warps} warps, {'launched' if launched else 'sweep only'}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
