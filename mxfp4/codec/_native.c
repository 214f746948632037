/* MXFP4 CPU kernels. Plain C functions, called from mxfp4/native.py through ctypes (which releases the
 * GIL, so Python threads run them on every core). They must equal mxfp4/reference.py byte for byte:
 * the tests compare them exhaustively and on random data.
 *
 * Build flags matter for exactness: -ffp-contract=off keeps `total += d * d` from becoming a fused
 * multiply-add, so the mse rule's float64 sums round exactly as numpy's do.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { IN_F32 = 0, IN_F16 = 1, IN_BF16 = 2 };
enum { RULE_FLOOR = 0, RULE_ROUND_UP = 1, RULE_EVEN = 2, RULE_MSE = 3 }; /* mxfp4.rules.SCALE_RULES */
enum { ROUND_RNE = 0, ROUND_GGML = 1 };                                 /* mxfp4.rules.ROUNDINGS */

#define BLOCK 32
/* Helpers are forced inline so that each target clone of a kernel gets its own vector code. */
#define INLINE static inline __attribute__((always_inline))

/* On x86-64 with GCC (ELF), each exported kernel is also compiled for AVX2 and the loader picks the
 * best at run time; elsewhere the portable build runs (MXFP4_PORTABLE forces it: the tests build it so, to run
 * the clone an AVX2 machine never picks). Results are identical: no fused or reassociated float operations are
 * allowed in either. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__) && !defined(MXFP4_PORTABLE)
#define KERNEL __attribute__((target_clones("avx2", "default")))
#else
#define KERNEL
#endif
#define E8M0_NAN 0xFF
#define E8M0_MAX_FINITE 254

INLINE float f32_from_bits(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }

/* 2**(127 - s) as float32; s = 254 needs the subnormal 2**-127. */
INLINE float inv_pow2_f32(int s) {
    return s < 254 ? f32_from_bits((uint32_t)(254 - s) << 23) : f32_from_bits(0x00400000u);
}

/* 2**(s - 127) as float64 (always a normal double). */
INLINE double pow2_f64(int s) {
    uint64_t b = (uint64_t)(s - 127 + 1023) << 52; double d; memcpy(&d, &b, 8); return d;
}

INLINE void load_block(const void *x, int kind, int64_t i, const uint32_t *f16_table, uint32_t bits[BLOCK]) {
    if (kind == IN_F32) {
        memcpy(bits, (const uint32_t *)x + i * BLOCK, BLOCK * 4);
    } else if (kind == IN_BF16) {
        const uint16_t *p = (const uint16_t *)x + i * BLOCK;
        for (int j = 0; j < BLOCK; j++) bits[j] = (uint32_t)p[j] << 16;
    } else {
        const uint16_t *p = (const uint16_t *)x + i * BLOCK;
        for (int j = 0; j < BLOCK; j++) bits[j] = f16_table[p[j]];
    }
}

/* Magnitude code 0..7 of r = |x| / 2**X: how many midpoints r passes. rne: ties at 0.75, 1.75, 3.5
 * round up (to the even code); ggml: every tie rounds toward zero. The same comparisons give the
 * rounded magnitude as a sum of the steps between neighbours (0.5 0.5 0.5 0.5 1 1 2). */
#define PASSES(r, GE_TIE)                                                                             \
    int c0 = (r) > 0.25f, c1 = GE_TIE((r), 0.75f), c2 = (r) > 1.25f, c3 = GE_TIE((r), 1.75f);         \
    int c4 = (r) > 2.5f, c5 = GE_TIE((r), 3.5f), c6 = (r) > 5.0f;
#define ROUND_BLOCK(NAME, GE_TIE)                                                                     \
    INLINE void NAME##_codes(const float a[BLOCK], float inv, uint8_t m[BLOCK]) {              \
        for (int j = 0; j < BLOCK; j++) {                                                             \
            PASSES(a[j] * inv, GE_TIE)                                                                \
            m[j] = (uint8_t)(c0 + c1 + c2 + c3 + c4 + c5 + c6);                                        \
        }                                                                                             \
    }                                                                                                 \
    INLINE void NAME##_values(const float a[BLOCK], float inv, uint8_t m[BLOCK], float q[BLOCK]) { \
        for (int j = 0; j < BLOCK; j++) {                                                             \
            PASSES(a[j] * inv, GE_TIE)                                                                \
            m[j] = (uint8_t)(c0 + c1 + c2 + c3 + c4 + c5 + c6);                                        \
            q[j] = 0.5f * (float)(c0 + c1 + c2 + c3) + (float)(c4 + c5) + 2.0f * (float)c6;           \
        }                                                                                             \
    }
#define GE(r, t) ((r) >= (t))
#define GT(r, t) ((r) > (t))
ROUND_BLOCK(round_rne, GE)
ROUND_BLOCK(round_ggml, GT)

/* Magnitude codes of the block at scale byte s, and (when q is given) the rounded magnitudes. */
INLINE void round_block(int rounding, const float a[BLOCK], int s, uint8_t m[BLOCK], float *q) {
    float inv = inv_pow2_f32(s);
    if (rounding == ROUND_RNE) {
        if (q) round_rne_values(a, inv, m, q); else round_rne_codes(a, inv, m);
    } else {
        if (q) round_ggml_values(a, inv, m, q); else round_ggml_codes(a, inv, m);
    }
}

/* Sum over the block of (|x| - q * 2**X)**2. Each difference is exact (as a float32 even) and so is its
 * square in float64; only the additions round, so their order is fixed: eight lanes j % 8, each
 * summed in element order, then a pairwise tree. mxfp4/reference.py adds in exactly this order. */
INLINE double squared_error(const float a[BLOCK], const float q[BLOCK], int s) {
    double p = pow2_f64(s), sq[BLOCK], lane[8];
    for (int j = 0; j < BLOCK; j++) {
        double d = (double)a[j] - (double)q[j] * p;
        sq[j] = d * d;
    }
    for (int k = 0; k < 8; k++) lane[k] = sq[k];
    for (int i = 1; i < BLOCK / 8; i++)
        for (int k = 0; k < 8; k++) lane[k] += sq[8 * i + k];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

INLINE int rule_scale(uint32_t amax, int rule) {
    int s = (int)(amax >> 23) - 2;
    uint32_t mantissa = amax & 0x7FFFFFu;
    if (rule == RULE_ROUND_UP) s += mantissa >= 0x400001u;
    else if (rule == RULE_EVEN) s += mantissa >= 0x600000u;
    if (s < 0) s = 0;
    if (s > E8M0_MAX_FINITE) s = E8M0_MAX_FINITE;
    return s;
}

/* Chooses the scale and leaves the chosen scale's magnitude codes in m. mse: floor, then floor + 1,
 * then floor - 1; a candidate must be strictly better to win. */
INLINE int choose_scale(const float a[BLOCK], uint32_t amax, int rule, int rounding, uint8_t m[BLOCK]) {
    float q[BLOCK];
    int s = rule_scale(amax, rule == RULE_MSE ? RULE_FLOOR : rule);
    round_block(rounding, a, s, m, rule == RULE_MSE ? q : NULL);
    if (rule != RULE_MSE) return s;
    double best_error = squared_error(a, q, s);
    int best = s;
    const int steps[2] = {1, -1};
    for (int k = 0; k < 2; k++) {
        int c = s + steps[k];
        if (c < 0 || c > E8M0_MAX_FINITE) continue;
        if (steps[k] < 0) {
            /* At floor - 1 the largest element saturates to 6 * 2**(c - 127); that one exact term is a
             * lower bound of the candidate's computed sum (a rounded sum of non-negative terms never
             * drops below one of them), so when it alone reaches best_error the candidate cannot win.
             * Skipping it changes no result, only the time. */
            double d = (double)f32_from_bits(amax) - 6.0 * pow2_f64(c);
            if (d > 0 && d * d >= best_error) continue;
        }
        uint8_t mc[BLOCK];
        round_block(rounding, a, c, mc, q);
        double e = squared_error(a, q, c);
        if (e < best_error) { best_error = e; best = c; memcpy(m, mc, BLOCK); }
    }
    return best;
}

/* x: n_blocks * 32 elements of `kind`; writes blocks_out [n_blocks, 16] and scales_out [n_blocks].
 * Blocks holding NaN or +-Inf get scale 0xFF and codes 0 (the caller decides whether to raise). */
KERNEL void mx_encode(const void *x, int kind, int64_t n_blocks, int rule, int rounding, const uint32_t *f16_table,
               uint8_t *blocks_out, uint8_t *scales_out) {
    uint32_t bits[BLOCK], mag_bits[BLOCK];
    float a[BLOCK];
    uint8_t m[BLOCK], codes[BLOCK];
    for (int64_t i = 0; i < n_blocks; i++) {
        load_block(x, kind, i, f16_table, bits);
        uint32_t amax = 0;
        for (int j = 0; j < BLOCK; j++) {
            mag_bits[j] = bits[j] & 0x7FFFFFFFu;
            amax = mag_bits[j] > amax ? mag_bits[j] : amax;
        }
        uint8_t *out = blocks_out + i * (BLOCK / 2);
        if (amax >= 0x7F800000u) {
            scales_out[i] = E8M0_NAN;
            memset(out, 0, BLOCK / 2);
            continue;
        }
        memcpy(a, mag_bits, sizeof a);
        scales_out[i] = (uint8_t)choose_scale(a, amax, rule, rounding, m);
        /* Sign bit 3. ggml never writes -0: a zero magnitude keeps code 0. */
        for (int j = 0; j < BLOCK; j++) {
            uint8_t sign = (uint8_t)(bits[j] >> 31);
            if (rounding == ROUND_GGML) sign &= (uint8_t)(m[j] != 0);
            codes[j] = (uint8_t)(m[j] | (sign << 3));
        }
        for (int k = 0; k < BLOCK / 2; k++) out[k] = (uint8_t)(codes[2 * k] | (codes[2 * k + 1] << 4));
    }
}

/* Decoding through a table indexed by (scale byte, code byte): one load per packed byte gives both of
 * its elements. table16 holds two 16-bit outputs per entry (bf16 / f16), table32 two float32s. The
 * tables are built by mxfp4.native from the numpy reference, so decoding equals it by construction. */
#define DEFINE_DECODE(NAME, WORD)                                                                     \
    KERNEL void NAME(const uint8_t *blocks, const uint8_t *scales, int64_t n_blocks, const WORD *table,  \
                     WORD *out) {                                                                       \
        for (int64_t i = 0; i < n_blocks; i++) {                                                        \
            const WORD *row = table + ((size_t)scales[i] << 8);                                         \
            const uint8_t *b = blocks + i * (BLOCK / 2);                                                \
            WORD *o = out + i * (BLOCK / 2);                                                            \
            for (int k = 0; k < BLOCK / 2; k++) o[k] = row[b[k]];                                       \
        }                                                                                               \
    }
DEFINE_DECODE(mx_decode16, uint32_t)
DEFINE_DECODE(mx_decode32, uint64_t)

/* Decoding rows [row_start, row_stop) of a matrix [rows, cols] (cols / 32 blocks a row) straight into its
 * transpose out [cols, rows]: transformers keeps dense experts as [in, out] while the blocks run along in.
 * Rows go in tiles of TILE_ROWS; each tile's block column is decoded into a small buffer, then written out
 * one output row at a time (TILE_ROWS consecutive elements, 64 bytes of bf16). Callers split rows at
 * multiples of TILE_ROWS, so threads write disjoint runs (sharing a cache line only at the edges where a
 * row of out is not a whole number of lines). Same table, same values as mx_decode16/32. */
#define TILE_ROWS 32
#define DEFINE_DECODE_T(NAME, WORD, HALF, SHIFT)                                                         \
    KERNEL void NAME(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t blocks_per_row,     \
                     int64_t row_start, int64_t row_stop, const WORD *table, HALF *out) {                    \
        HALF tile[BLOCK][TILE_ROWS];                                                                       \
        for (int64_t r0 = row_start; r0 < row_stop; r0 += TILE_ROWS) {                                    \
            int64_t n = row_stop - r0 < TILE_ROWS ? row_stop - r0 : TILE_ROWS;                            \
            for (int64_t b = 0; b < blocks_per_row; b++) {                                                \
                for (int64_t i = 0; i < n; i++) {                                                         \
                    int64_t at = (r0 + i) * blocks_per_row + b;                                           \
                    const WORD *row = table + ((size_t)scales[at] << 8);                                  \
                    const uint8_t *q = blocks + at * (BLOCK / 2);                                         \
                    for (int k = 0; k < BLOCK / 2; k++) {                                                 \
                        WORD pair = row[q[k]];                                                            \
                        tile[2 * k][i] = (HALF)pair;                                                      \
                        tile[2 * k + 1][i] = (HALF)(pair >> SHIFT);                                       \
                    }                                                                                     \
                }                                                                                         \
                for (int j = 0; j < BLOCK; j++)                                                           \
                    memcpy(out + (b * BLOCK + j) * rows + r0, tile[j], (size_t)n * sizeof(HALF));         \
            }                                                                                             \
        }                                                                                                 \
    }
DEFINE_DECODE_T(mx_decode16_transposed, uint32_t, uint16_t, 16)
DEFINE_DECODE_T(mx_decode32_transposed, uint64_t, uint32_t, 32)

/* HF (blocks [n,16], scales [n]) <-> GGUF block_mxfp4 [n,17]; see mxfp4/layout.py for the diagram. */
KERNEL void mx_hf_to_gguf(const uint8_t *blocks, const uint8_t *scales, int64_t n_blocks, uint8_t *raw) {
    for (int64_t i = 0; i < n_blocks; i++) {
        const uint8_t *h = blocks + i * 16;
        uint8_t *g = raw + i * 17;
        g[0] = scales[i];
        for (int k = 0; k < 8; k++) {
            g[1 + 2 * k] = (uint8_t)((h[k] & 0x0F) | (h[8 + k] << 4));
            g[2 + 2 * k] = (uint8_t)((h[k] >> 4) | (h[8 + k] & 0xF0));
        }
    }
}

/* hf_to_gguf over rows of blocks_per_row blocks, sending even rows to out_even and odd rows to out_odd
 * (gpt-oss interleaves gate and up rows; GGUF stores them as two tensors). Row r lands at row r / 2. */
KERNEL void mx_hf_to_gguf_split_rows(const uint8_t *blocks, const uint8_t *scales, int64_t row_start, int64_t row_stop,
                                     int64_t blocks_per_row, uint8_t *out_even, uint8_t *out_odd) {
    for (int64_t r = row_start; r < row_stop; r++) {
        uint8_t *dest = ((r & 1) ? out_odd : out_even) + (r >> 1) * blocks_per_row * 17;
        mx_hf_to_gguf(blocks + r * blocks_per_row * 16, scales + r * blocks_per_row, blocks_per_row, dest);
    }
}

KERNEL void mx_gguf_to_hf(const uint8_t *raw, int64_t n_blocks, uint8_t *blocks, uint8_t *scales) {
    for (int64_t i = 0; i < n_blocks; i++) {
        const uint8_t *g = raw + i * 17;
        uint8_t *h = blocks + i * 16;
        scales[i] = g[0];
        for (int k = 0; k < 8; k++) {
            h[k] = (uint8_t)((g[1 + 2 * k] & 0x0F) | (g[2 + 2 * k] << 4));
            h[8 + k] = (uint8_t)((g[1 + 2 * k] >> 4) | (g[2 + 2 * k] & 0xF0));
        }
    }
}

/* GPTQ's column loop (mxfp4/calibrate/gptq.py) over one block of `width` columns (a multiple of 32) for rows
 * [row_start, row_stop) of w (float32, row r at w + r * stride, updated in place). u: [width, width] float32, row j
 * holding the inverse factor's U[j, block columns]. Each column is rounded at its row's scale byte (codes_out, row r
 * at codes_out + r * codes_stride, sign in bit 3), its error e = (w - q) / U[j, j] goes to errors_out [rows, width]
 * (and e * e, in double, to the row's sum in loss_out [rows]) and is fed to the later columns of the block:
 * w[k] -= e * U[j, k]. Rows are independent; every float operation is the one, and in the order, that gptq.py's
 * torch loop performs per element (no fused multiply-add: this file is built with -ffp-contract=off), so the bytes
 * are the loop's. Finite weights only (the caller checks).
 *
 * Scales: either chosen by the rule at the first column of each 32-column group from the group's current values
 * (scales_out [rows, width / 32]; the columns in their natural order), or fixed before the loop (act-order: the
 * columns come permuted; column j takes scale byte scales[r * groups + column_groups[j]]). */

/* 1 / 2**(s - 127) and 2**(s - 127) as float32 for a scale byte, the NaN byte giving 0 and NaN (its codes are 0). */
INLINE void scale_factors(int s, float *inv, float *pow2) {
    *inv = s == E8M0_NAN ? 0.0f : inv_pow2_f32(s);
    /* 2**(s - 127): exponent field s, or the subnormal 2**-127 for s = 0 */
    *pow2 = s == E8M0_NAN ? f32_from_bits(0x7FC00000u)
            : s > 0      ? f32_from_bits((uint32_t)s << 23)
                         : f32_from_bits(0x00400000u);
}

/* One element rounded at scale s (inv, pow2 from scale_factors): its code (sign in bit 3) and the error fed back,
 * (x - value) / diagonal. */
INLINE float gptq_round(float x, int s, float inv, float pow2, int rounding, float diagonal, uint8_t *code_out) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    float magnitude = f32_from_bits(bits & 0x7FFFFFFFu), r_ = magnitude * inv;
    int code, negative = (int)(bits >> 31);
    float q;
    if (rounding == ROUND_RNE) {
        PASSES(r_, GE)
        code = c0 + c1 + c2 + c3 + c4 + c5 + c6;
        q = 0.5f * (float)(c0 + c1 + c2 + c3) + (float)(c4 + c5) + 2.0f * (float)c6;
    } else {
        PASSES(r_, GT)
        code = c0 + c1 + c2 + c3 + c4 + c5 + c6;
        q = 0.5f * (float)(c0 + c1 + c2 + c3) + (float)(c4 + c5) + 2.0f * (float)c6;
        negative &= code != 0;
    }
    if (s == E8M0_NAN) code = negative = 0;
    *code_out = (uint8_t)(code | (negative << 3));
    float value = q * pow2;
    if (negative) value = -value;
    return (x - value) / diagonal;
}

/* Rows one at a time (any scale choice). */
INLINE void gptq_rows(float *w, int64_t stride, const float *u, int64_t width, int64_t row_start, int64_t row_stop,
                      int rule, int rounding, const uint8_t *scales, int64_t groups, const int32_t *column_groups,
                      uint8_t *codes_out, int64_t codes_stride, uint8_t *scales_out, float *errors_out,
                      double *loss_out) {
    for (int64_t r = row_start; r < row_stop; r++) {
        float *row = w + r * stride;
        double loss = 0.0; /* the row's sum of squared errors: GPTQ's own measure of what it left (gptq.py) */
        int s = 0;
        float inv = 0.0f, pow2 = 0.0f;
        for (int64_t j = 0; j < width; j++) {
            if (scales != NULL) {
                s = scales[r * groups + column_groups[j]];
                scale_factors(s, &inv, &pow2);
            } else if (j % BLOCK == 0) {
                float a[BLOCK];
                uint8_t m[BLOCK];
                uint32_t amax = 0;
                for (int k = 0; k < BLOCK; k++) {
                    uint32_t bits;
                    memcpy(&bits, row + j + k, 4);
                    bits &= 0x7FFFFFFFu;
                    amax = bits > amax ? bits : amax;
                    a[k] = f32_from_bits(bits);
                }
                /* fed-back values overflowed: the NaN byte, as the torch loop gives */
                s = amax >= 0x7F800000u ? E8M0_NAN : choose_scale(a, amax, rule, rounding, m);
                scale_factors(s, &inv, &pow2);
                scales_out[r * (width / BLOCK) + j / BLOCK] = (uint8_t)s;
            }
            float e = gptq_round(row[j], s, inv, pow2, rounding, u[j * width + j], codes_out + r * codes_stride + j);
            errors_out[r * width + j] = e;
            loss += (double)e * (double)e;
            const float *uj = u + j * width;
            for (int64_t k = j + 1; k < width; k++) row[k] -= e * uj[k];
        }
        loss_out[r] = loss;
    }
}

/* Fixed scales, LANES rows at a time: the tile held transposed ([column][row], on the stack), each step one vector
 * operation on every row of the tile (across rows: along a row the feedback is short and each element's rounding
 * depends on the element before). Per row, the same float operations in the same order as gptq_round and
 * gptq_rows (selects and bit operations in place of branches: negation is the sign bit's flip): the same bytes.
 * GCC/clang vector extensions; where the ISA's vectors are narrower the compiler splits them. */
#define LANES 8
#define TILE_WIDTH 256 /* the widest block a tile takes; wider ones go row by row */
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));

INLINE void gptq_tile_fixed(float *w, int64_t stride, const float *u, int64_t width, int64_t r0, int rounding,
                            const uint8_t *scales, int64_t groups, const int32_t *column_groups, uint8_t *codes_out,
                            int64_t codes_stride, float *errors_out, double *loss_out) {
    f32x8 t[TILE_WIDTH], e_tile[TILE_WIDTH];
    i32x8 c_tile[TILE_WIDTH];
    double loss[LANES] = {0};
    for (int64_t j = 0; j < width; j++)
        for (int i = 0; i < LANES; i++) t[j][i] = w[(r0 + i) * stride + j];
    const i32x8 one = {1, 1, 1, 1, 1, 1, 1, 1};
    for (int64_t j = 0; j < width; j++) {
        const float *uj = u + j * width;
        i32x8 s;
        for (int i = 0; i < LANES; i++) s[i] = scales[(r0 + i) * groups + column_groups[j]];
        /* scale_factors: masks are -1 where true */
        i32x8 nan = s == E8M0_NAN, low = s < 254, positive = s > 0;
        u32x8 inv_bits = (u32x8)((low & ((254 - s) << 23)) | (~low & 0x00400000));
        u32x8 pow2_bits = (u32x8)((positive & (s << 23)) | (~positive & 0x00400000));
        inv_bits &= (u32x8)~nan;
        pow2_bits = (pow2_bits & (u32x8)~nan) | ((u32x8)nan & 0x7FC00000u);
        f32x8 x = t[j];
        u32x8 bits = (u32x8)x;
        f32x8 r_ = (f32x8)(bits & 0x7FFFFFFFu) * (f32x8)inv_bits;
        i32x8 c0 = (r_ > 0.25f) & one, c2 = (r_ > 1.25f) & one, c4 = (r_ > 2.5f) & one, c6 = (r_ > 5.0f) & one;
        i32x8 c1, c3, c5;
        if (rounding == ROUND_RNE) {
            c1 = (r_ >= 0.75f) & one, c3 = (r_ >= 1.75f) & one, c5 = (r_ >= 3.5f) & one;
        } else {
            c1 = (r_ > 0.75f) & one, c3 = (r_ > 1.75f) & one, c5 = (r_ > 3.5f) & one;
        }
        i32x8 code = c0 + c1 + c2 + c3 + c4 + c5 + c6;
        f32x8 q = 0.5f * __builtin_convertvector(c0 + c1 + c2 + c3, f32x8) + __builtin_convertvector(c4 + c5, f32x8) +
                  2.0f * __builtin_convertvector(c6, f32x8);
        i32x8 negative = (i32x8)(bits >> 31);
        if (rounding != ROUND_RNE) negative &= (code != 0) & one;
        code &= ~nan;
        negative &= ~nan;
        c_tile[j] = code | (negative << 3);
        f32x8 value = (f32x8)((u32x8)(q * (f32x8)pow2_bits) ^ ((u32x8)negative << 31));
        f32x8 e = (x - value) / uj[j];
        e_tile[j] = e;
        for (int i = 0; i < LANES; i++) loss[i] += (double)e[i] * (double)e[i];
        for (int64_t k = j + 1; k < width; k++) t[k] -= e * uj[k];
    }
    for (int i = 0; i < LANES; i++) {
        for (int64_t j = 0; j < width; j++) {
            w[(r0 + i) * stride + j] = t[j][i];
            codes_out[(r0 + i) * codes_stride + j] = (uint8_t)c_tile[j][i];
            errors_out[(r0 + i) * width + j] = e_tile[j][i];
        }
        loss_out[r0 + i] = loss[i];
    }
}

/* Sum over rows [row_start, row_stop) of (w - value)^2 for each column of w [rows, cols] float32 and its MXFP4
 * (blocks [rows, cols / 32, 16], scales [rows, cols / 32]), added to out [cols] (float64). Each difference and its
 * square are exact in double (the decoded value is exact there, NaN for the NaN byte); only the sums round. */
KERNEL void mx_column_squared_error(const float *w, const uint8_t *blocks, const uint8_t *scales, int64_t cols,
                                    int64_t row_start, int64_t row_stop, double *out) {
    static const double E2M1[16] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                                    -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0};
    const uint64_t nan_bits = 0x7FF8000000000000ull;
    double nan;
    memcpy(&nan, &nan_bits, 8);
    int64_t groups = cols / BLOCK;
    for (int64_t r = row_start; r < row_stop; r++) {
        for (int64_t g = 0; g < groups; g++) {
            int s = scales[r * groups + g];
            double p = s == E8M0_NAN ? nan : pow2_f64(s);
            const uint8_t *b = blocks + (r * groups + g) * (BLOCK / 2);
            const float *x = w + r * cols + g * BLOCK;
            double *o = out + g * BLOCK;
            for (int k = 0; k < BLOCK / 2; k++) {
                double low = (double)x[2 * k] - E2M1[b[k] & 15] * p, high = (double)x[2 * k + 1] - E2M1[b[k] >> 4] * p;
                o[2 * k] += low * low;
                o[2 * k + 1] += high * high;
            }
        }
    }
}

KERNEL void mx_gptq_block(float *w, int64_t stride, const float *u, int64_t width, int64_t row_start,
                          int64_t row_stop, int rule, int rounding, uint8_t *codes_out, int64_t codes_stride,
                          uint8_t *scales_out, float *errors_out, double *loss_out) {
    gptq_rows(w, stride, u, width, row_start, row_stop, rule, rounding, NULL, 0, NULL, codes_out, codes_stride,
              scales_out, errors_out, loss_out);
}

KERNEL void mx_gptq_block_fixed(float *w, int64_t stride, const float *u, int64_t width, int64_t row_start,
                                int64_t row_stop, int rounding, const uint8_t *scales, int64_t groups,
                                const int32_t *column_groups, uint8_t *codes_out, int64_t codes_stride,
                                float *errors_out, double *loss_out) {
    int64_t r = row_start;
    for (; r + LANES <= row_stop && width <= TILE_WIDTH; r += LANES) {
        if (rounding == ROUND_RNE) /* the rounding a constant in each copy: no per-element test */
            gptq_tile_fixed(w, stride, u, width, r, ROUND_RNE, scales, groups, column_groups, codes_out,
                            codes_stride, errors_out, loss_out);
        else
            gptq_tile_fixed(w, stride, u, width, r, ROUND_GGML, scales, groups, column_groups, codes_out,
                            codes_stride, errors_out, loss_out);
    }
    gptq_rows(w, stride, u, width, r, row_stop, 0, rounding, scales, groups, column_groups, codes_out, codes_stride,
              NULL, errors_out, loss_out);
}

/* An importable module, so the build system names and places the library; its functions are reached
 * through ctypes, not the Python C API. */
static struct PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native",
                                           "MXFP4 C kernels, called through ctypes by mxfp4.native", -1, NULL};
PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&native_module); }
