"""Builds the optional C kernels. Without a compiler the install still succeeds (numpy fallback)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mxfp4.codec._native",
            sources=["mxfp4/codec/_native.c"],
            # -ffp-contract=off: no fused multiply-add, so float64 error sums round as numpy's do.
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
            optional=True,
        ),
        Extension(
            "mxfp4.model.kernels._cpu_gemv",
            sources=[
                "mxfp4/model/kernels/_cpu_gemv.c",
                "mxfp4/model/kernels/_cpu_attention.c",
                "mxfp4/model/kernels/_cpu_moe.c",
                "mxfp4/model/kernels/_cpu_norm.c",
                "mxfp4/model/kernels/_cpu_rotary.c",
                "mxfp4/model/kernels/cpu_pool.c",
            ],
            depends=[
                "mxfp4/model/kernels/cpu_pool.h",
                "mxfp4/model/kernels/cpu_gemv.h",
                "mxfp4/model/kernels/cpu_bf16.h",
                "mxfp4/model/kernels/cpu_exp.h",
            ],
            extra_compile_args=["-O3", "-fno-fast-math", "-pthread"],
            extra_link_args=["-pthread"],
            optional=True,
        ),
    ]
)
