/* gpt-oss's MoE for one token on the CPU in one call: for each of its k routed experts, gate_up times x fused with
 * the clamped SwiGLU, down times that, weighted by the routing score and summed, straight from the MXFP4 blocks
 * (the products of _cpu_gemv.c, rows split over the pool's threads). Decoding reaches this once a layer instead
 * of ~15 torch ops an expert (grouping, indexing, casts, index_add), which between decode steps run with cold
 * caches. Called from mxfp4/model/kernels/cpu_gemv.py through ctypes.
 *
 * Arithmetic, as native_path.experts' per-expert path: float32 products and SwiGLU; with bf16 activations the
 * SwiGLU output is rounded to bf16 before down (the twin's down product takes it in the activations' dtype);
 * the k weighted outputs are summed in float32 and returned in float32 (the caller casts once). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_bf16.h"
#include "cpu_gemv.h"

/* y [rows] = W x + bias (+ the SwiGLU into act [rows / 2]) for one token: bf16 x through AVX512-BF16 where the CPU
 * has it, else widened to float32 (wide: [cols] floats of scratch). */
static void product(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t cols, const void *x,
                    int is_bf16, const float *bias, float *y, void *scratch, float *wide, int swiglu, float limit,
                    float alpha, float *act, int threads) {
    if (is_bf16 && mxg_mxfp4_bf16x(blocks, scales, rows, cols, (const uint16_t *)x, 1, bias, y, (uint16_t *)scratch,
                                   swiglu, limit, alpha, act, threads))
        return;
    const float *xf = (const float *)x;
    if (is_bf16) {
        for (int64_t i = 0; i < cols; i++) wide[i] = element(x, i, 1);
        xf = wide;
    }
    mxg_mxfp4(blocks, scales, rows, cols, xf, 1, bias, y, (float *)scratch, swiglu, limit, alpha, act, threads);
}

/* out [hidden] (float32) = sum_c weights[c] * expert_{experts[c]}(x) for x [hidden] (bf16 or float32) and gpt-oss's
 * experts: gate_up blocks [E, 2I, H/32, 16], scales [E, 2I, H/32], bias [E, 2I] (the activations' dtype); down
 * blocks [E, H, I/32, 16], scales [E, H, I/32], bias [E, H]. Returns 0 when scratch memory is not to be had. */
int mxm_token(const void *x, int is_bf16, int64_t hidden, int64_t inter, int64_t k, const int64_t *experts,
              const float *weights, const uint8_t *gate_up_blocks, const uint8_t *gate_up_scales,
              const void *gate_up_bias, const uint8_t *down_blocks, const uint8_t *down_scales, const void *down_bias,
              float limit, float alpha, float *out, int threads) {
    int64_t wide = hidden > inter ? hidden : inter;
    /* floats: gate_up bias, its products, the SwiGLU output, down's bias and products, two activation copies */
    float *memory = malloc(sizeof(float) * (2 * inter + 2 * inter + inter + hidden + hidden + 2 * wide));
    if (memory == NULL) return 0;
    float *up_bias = memory, *h = up_bias + 2 * inter, *act = h + 2 * inter, *down_b = act + inter;
    float *y = down_b + hidden, *scratch = y + hidden, *widened = scratch + wide;
    uint16_t *act16 = (uint16_t *)widened; /* bf16: the rounded SwiGLU output, in the first half of `widened` */
    memset(out, 0, sizeof(float) * hidden);
    int64_t up_rows = 2 * inter, up_blocks = hidden / 32, down_blocks_per_row = inter / 32;
    for (int64_t c = 0; c < k; c++) {
        int64_t e = experts[c];
        for (int64_t r = 0; r < up_rows; r++) up_bias[r] = element(gate_up_bias, e * up_rows + r, is_bf16);
        for (int64_t r = 0; r < hidden; r++) down_b[r] = element(down_bias, e * hidden + r, is_bf16);
        product(gate_up_blocks + e * up_rows * up_blocks * 16, gate_up_scales + e * up_rows * up_blocks, up_rows,
                hidden, x, is_bf16, up_bias, h, scratch, widened, 1, limit, alpha, act, threads);
        const void *down_x = act;
        if (is_bf16) {
            for (int64_t i = 0; i < inter; i++) act16[i] = f32_to_bf16(act[i]);
            down_x = act16;
        }
        product(down_blocks + e * hidden * down_blocks_per_row * 16, down_scales + e * hidden * down_blocks_per_row,
                hidden, inter, down_x, is_bf16, down_b, y, scratch, act, 0, 0.0f, 0.0f, NULL, threads);
        for (int64_t r = 0; r < hidden; r++) out[r] += weights[c] * y[r];
    }
    free(memory);
    return 1;
}
