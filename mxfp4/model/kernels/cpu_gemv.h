/* The products of _cpu_gemv.c that the other kernels of this extension build on (_cpu_moe.c). */
#ifndef MXFP4_CPU_GEMV_H
#define MXFP4_CPU_GEMV_H

#include <stdint.h>

#define MXG_EACH_MAX 32 /* matrices one mxg_mxfp4_each call takes */
int mxg_mxfp4_each(int64_t k, const uint8_t *const *blocks, const uint8_t *const *scales, int64_t rows, int64_t cols,
                   const void *const *x, int is_bf16, const float *const *bias, float *const *y, float *scratch,
                   int swiglu, float limit, float alpha, float *const *out, int int8_activations, int threads);

#endif
