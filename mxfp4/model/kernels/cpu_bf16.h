/* bf16 <-> float32 for the CPU kernels of this extension (_cpu_gemv.c, _cpu_attention.c, _cpu_moe.c). */
#ifndef MXFP4_CPU_BF16_H
#define MXFP4_CPU_BF16_H

#include <stdint.h>
#include <string.h>

/* exact: bf16 is the top half of a float32 */
static inline __attribute__((always_inline)) float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* round to nearest, ties to even; any NaN becomes the quiet NaN 0x7FC0 (torch's float -> bf16 cast) */
static inline __attribute__((always_inline)) uint16_t f32_to_bf16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, 4);
    if ((bits & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    bits += 0x7FFFu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* element i of an array of bf16 or float32 values, as a float32 */
static inline __attribute__((always_inline)) float element(const void *base, int64_t i, int is_bf16) {
    return is_bf16 ? bf16_to_f32(((const uint16_t *)base)[i]) : ((const float *)base)[i];
}

#endif
