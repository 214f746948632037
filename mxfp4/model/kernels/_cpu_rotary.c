/* gpt-oss's rotary embedding (half-split, neox) for a few positions (decoding) in one call: the eight torch ops of
 * rope.apply_rotary (chunk, four multiplies, a subtract, an add, a cat), which between decode steps run with cold
 * caches. Called from mxfp4/model/kernels/cpu_rotary.py through ctypes.
 *
 * Arithmetic, bit for bit the torch twin's: each multiply, the subtract and the add are rounded to the tensor's
 * dtype as torch's elementwise ops round them (bf16: the float32 result, exact for a product of two bf16 values,
 * rounded to nearest even). fp-contract is off, so no compiler fuses a multiply and an add the twin keeps apart. */
#include <stdint.h>

#include "cpu_bf16.h"

static inline float rounded(float v, int is_bf16) { return is_bf16 ? bf16_to_f32(f32_to_bf16(v)) : v; }

/* out [B, H, T, D] (contiguous) = x rotated, x [B, H, T, D] at element strides (stride_b, stride_h, stride_t; the
 * last dimension contiguous), cos and sin [T, D / 2] (contiguous), all bf16 or all float32. */
__attribute__((optimize("fp-contract=off"))) void mxr_rotary(const void *x, int is_bf16, int64_t batch,
                                                              int64_t heads, int64_t positions, int64_t dim,
                                                              int64_t stride_b, int64_t stride_h, int64_t stride_t,
                                                              const void *cos, const void *sin, void *out) {
    int64_t half = dim / 2;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t h = 0; h < heads; h++)
            for (int64_t t = 0; t < positions; t++) {
                int64_t in = b * stride_b + h * stride_h + t * stride_t;
                int64_t at = ((b * heads + h) * positions + t) * dim;
                for (int64_t i = 0; i < half; i++) {
                    float first = element(x, in + i, is_bf16), second = element(x, in + half + i, is_bf16);
                    float c = element(cos, t * half + i, is_bf16), s = element(sin, t * half + i, is_bf16);
                    float low = rounded(rounded(first * c, is_bf16) - rounded(second * s, is_bf16), is_bf16);
                    float high = rounded(rounded(second * c, is_bf16) + rounded(first * s, is_bf16), is_bf16);
                    if (is_bf16) {
                        ((uint16_t *)out)[at + i] = f32_to_bf16(low);
                        ((uint16_t *)out)[at + half + i] = f32_to_bf16(high);
                    } else {
                        ((float *)out)[at + i] = low;
                        ((float *)out)[at + half + i] = high;
                    }
                }
            }
}
