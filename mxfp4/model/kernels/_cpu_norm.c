/* gpt-oss's RMSNorm for a few rows (decoding) in one call: y = weight * (x * rsqrt(mean(x^2) + eps)), float32
 * arithmetic, cast to the output's dtype. Between decode steps torch's seven ops for it (cast, square, mean, add,
 * rsqrt, two multiplies) run with cold caches; this is one call. Called from mxfp4/model/kernels/cpu_norm.py
 * through ctypes.
 *
 * Arithmetic, as the torch twin (layers.RMSNorm): x widened to float32, the mean of the squares (summed here in
 * float64 and rounded once, where torch sums in float32: the mean differs by torch's own rounding of it at most),
 * r = 1 / sqrtf(mean + eps) in float32, then (x * r) and weight * that in float32, each rounded, then the cast
 * (bf16: round to nearest even). */
#include <math.h>
#include <stdint.h>

#include "cpu_bf16.h"

/* y [rows, cols] (bf16 or float32) = RMSNorm of x [rows, cols] (bf16 or float32) with weight [cols] (bf16 or
 * float32). */
void mxn_rms_norm(const void *x, int x_bf16, const void *weight, int weight_bf16, int64_t rows, int64_t cols,
                  float eps, void *y, int y_bf16) {
    for (int64_t r = 0; r < rows; r++) {
        double squares = 0.0;
        for (int64_t i = 0; i < cols; i++) {
            double v = element(x, r * cols + i, x_bf16);
            squares += v * v;
        }
        float mean = (float)(squares / (double)cols);
        float scale = 1.0f / sqrtf(mean + eps);
        for (int64_t i = 0; i < cols; i++) {
            float v = element(weight, i, weight_bf16) * (element(x, r * cols + i, x_bf16) * scale);
            if (y_bf16)
                ((uint16_t *)y)[r * cols + i] = f32_to_bf16(v);
            else
                ((float *)y)[r * cols + i] = v;
        }
    }
}
