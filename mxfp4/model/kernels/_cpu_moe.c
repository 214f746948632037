/* gpt-oss's MoE for one token on the CPU in one call: for each of its k routed experts, gate_up times x fused with
 * the clamped SwiGLU, down times that, weighted by the routing score and summed, straight from the MXFP4 blocks
 * (the products of _cpu_gemv.c, rows split over the pool's threads). Decoding reaches this once a layer instead
 * of ~15 torch ops an expert (grouping, indexing, casts, index_add), which between decode steps run with cold
 * caches. Called from mxfp4/model/kernels/cpu_gemv.py through ctypes.
 *
 * Arithmetic, as native_path.experts' per-expert path: float32 products and SwiGLU; with bf16 activations the
 * SwiGLU output is rounded to bf16 before down (the twin's down product takes it in the activations' dtype);
 * the k weighted outputs are summed in float32 and returned in float32 (the caller casts once). With
 * int8_activations (opt-in, approximate): x and each SwiGLU output (float32, not rounded to bf16) are quantized to
 * int8 with a float32 scale a block of 32 before their products (quantize_q8 in _cpu_gemv.c states the error). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_bf16.h"
#include "cpu_gemv.h"

/* out [hidden] (float32) = sum_c weights[c] * expert_{experts[c]}(x) for x [hidden] (bf16 or float32) and gpt-oss's
 * experts: gate_up blocks [E, 2I, H/32, 16], scales [E, 2I, H/32], bias [E, 2I] (the activations' dtype); down
 * blocks [E, H, I/32, 16], scales [E, H, I/32], bias [E, H]. The k gate_ups go as one pool job, then the k downs
 * (mxg_mxfp4_each: the threads meet twice a layer instead of 2k times; the C MoE of 24 layers' 20b experts
 * 78.0 -> 75.4 ms with bf16 activations and 83.4 -> 80.7 with float32, medians of 9 alternated in one process on
 * the Intel Xeon VM, 2026-12-03). int8_activations: see above. Returns 0 when scratch memory is not to be had or
 * k is past MXG_EACH_MAX. */
int mxm_token(const void *x, int is_bf16, int64_t hidden, int64_t inter, int64_t k, const int64_t *experts,
              const float *weights, const uint8_t *gate_up_blocks, const uint8_t *gate_up_scales,
              const void *gate_up_bias, const uint8_t *down_blocks, const uint8_t *down_scales, const void *down_bias,
              float limit, float alpha, int int8_activations, float *out, int threads) {
    if (k < 1 || k > MXG_EACH_MAX) return 0;
    int64_t up_rows = 2 * inter, up_blocks = hidden / 32, down_blocks_per_row = inter / 32;
    int64_t wide = hidden > inter ? hidden : inter;
    /* floats an expert: gate_up bias and products, the SwiGLU output and its bf16 copy, down's bias and products,
     * two activation copies (mxg_mxfp4_each's scratch) */
    float *memory = malloc(sizeof(float) * k * (2 * up_rows + 2 * inter + 2 * hidden + 2 * wide));
    if (memory == NULL) return 0;
    float *up_bias = memory, *h = up_bias + k * up_rows, *act = h + k * up_rows, *act16_area = act + k * inter;
    float *down_b = act16_area + k * inter, *y = down_b + k * hidden, *scratch = y + k * hidden;
    const uint8_t *up_b[MXG_EACH_MAX], *up_s[MXG_EACH_MAX], *down_bl[MXG_EACH_MAX], *down_s[MXG_EACH_MAX];
    const void *up_x[MXG_EACH_MAX], *down_x[MXG_EACH_MAX];
    const float *up_bias_c[MXG_EACH_MAX], *down_bias_c[MXG_EACH_MAX];
    float *h_c[MXG_EACH_MAX], *act_c[MXG_EACH_MAX], *y_c[MXG_EACH_MAX];
    for (int64_t c = 0; c < k; c++) {
        int64_t e = experts[c];
        for (int64_t r = 0; r < up_rows; r++)
            up_bias[c * up_rows + r] = element(gate_up_bias, e * up_rows + r, is_bf16);
        for (int64_t r = 0; r < hidden; r++) down_b[c * hidden + r] = element(down_bias, e * hidden + r, is_bf16);
        up_b[c] = gate_up_blocks + e * up_rows * up_blocks * 16;
        up_s[c] = gate_up_scales + e * up_rows * up_blocks;
        down_bl[c] = down_blocks + e * hidden * down_blocks_per_row * 16;
        down_s[c] = down_scales + e * hidden * down_blocks_per_row;
        up_x[c] = x;
        up_bias_c[c] = up_bias + c * up_rows;
        down_bias_c[c] = down_b + c * hidden;
        h_c[c] = h + c * up_rows;
        act_c[c] = act + c * inter;
        y_c[c] = y + c * hidden;
        down_x[c] = act_c[c];
    }
    mxg_mxfp4_each(k, up_b, up_s, up_rows, hidden, up_x, is_bf16, up_bias_c, h_c, scratch, 1, limit, alpha, act_c,
                   int8_activations, threads);
    if (is_bf16 && !int8_activations) /* the twin's down product takes the SwiGLU output in the activations' dtype */
        for (int64_t c = 0; c < k; c++) {
            uint16_t *act16 = (uint16_t *)(act16_area + c * inter);
            for (int64_t i = 0; i < inter; i++) act16[i] = f32_to_bf16(act_c[c][i]);
            down_x[c] = act16;
        }
    mxg_mxfp4_each(k, down_bl, down_s, hidden, inter, down_x, is_bf16 && !int8_activations, down_bias_c, y_c, scratch,
                   0, 0.0f, 0.0f, NULL, int8_activations, threads);
    memset(out, 0, sizeof(float) * hidden);
    for (int64_t c = 0; c < k; c++)
        for (int64_t r = 0; r < hidden; r++) out[r] += weights[c] * y_c[c][r];
    free(memory);
    return 1;
}
