/* CPU products of the model's decode and small-batch steps, read at memory bandwidth: MXFP4 weights times
 * activations with the blocks decoded in registers (no dense expert is ever written), optionally fused with
 * gpt-oss's clamped SwiGLU, and bf16 weights times activations. Called from mxfp4/model/kernels/cpu_gemv.py
 * through ctypes (which releases the GIL); rows are split over POSIX threads inside each call.
 *
 * Arithmetic, which the tests bound (tests/model/test_cpu_gemv.py): float32 throughout. A row's dot product
 * sums each 32-element block with its codes as the small integers 2 * E2M1 (exact), scales the block sum by
 * 2**(X - 1) (exact: a power of two), and adds the blocks in order; the torch twin decodes the matrix and
 * lets the BLAS sum in its own order. Both are float32 sums of the same exact products, so they differ by no
 * more than the float32 rounding of two summation orders: |a - b| <= 2 * gamma(K) * sum |x_k w_k|.
 * A block with the NaN scale byte 0xFF gives NaN, as the decoded matrix does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "cpu_bf16.h"
#include "cpu_gemv.h"
#include "cpu_pool.h"

#define BLOCK 32
#define BLOCK_BYTES 16
#define MAX_TOKENS 8 /* the small-batch limit: one decoded block is reused for up to this many activations (more
                        would spill the per-token accumulators out of the 16 AVX2 registers) */
#define INLINE static inline __attribute__((always_inline))

/* 2 * E2M1 for the 16 codes (sign in bit 3): integers, so a block's products and sums of up to 32 of them stay
 * exact in float32 until the scale is applied. */
static const int8_t TWICE_E2M1[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

static float HALF_SCALE[256]; /* 2**(s - 127) / 2, NaN for 0xFF */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (int s = 0; s < 255; s++) HALF_SCALE[s] = ldexpf(1.0f, s - 128);
    HALF_SCALE[255] = NAN;
}

/* x [T, K] reordered per block as the HF nibbles come: the 16 even elements, then the 16 odd ones. Byte j of
 * a block holds element 2j in its low nibble and 2j + 1 in its high one, so low nibbles meet even elements. */
static void split_even_odd(const float *x, int64_t tokens, int64_t cols, float *out) {
    for (int64_t t = 0; t < tokens; t++) {
        const float *src = x + t * cols;
        float *dst = out + t * cols;
        for (int64_t b = 0; b < cols; b += BLOCK) {
            for (int j = 0; j < 16; j++) {
                dst[b + j] = src[b + 2 * j];
                dst[b + 16 + j] = src[b + 2 * j + 1];
            }
        }
    }
}

/* ---- MXFP4 rows: portable ---------------------------------------------------------------------------------- */

static void mxfp4_rows_portable(const uint8_t *blocks, const uint8_t *scales, int64_t cols, const float *xs,
                                int64_t tokens, int64_t row0, int64_t row1, float *acc /* [tokens, rows] */,
                                int64_t rows) {
    int64_t nb = cols / BLOCK;
    for (int64_t r = row0; r < row1; r++) {
        float total[MAX_TOKENS] = {0};
        for (int64_t b = 0; b < nb; b++) {
            const uint8_t *q = blocks + (r * nb + b) * BLOCK_BYTES;
            float scale = HALF_SCALE[scales[r * nb + b]];
            float w[BLOCK];
            for (int j = 0; j < 16; j++) {
                w[j] = (float)TWICE_E2M1[q[j] & 15];
                w[16 + j] = (float)TWICE_E2M1[q[j] >> 4];
            }
            for (int64_t t = 0; t < tokens; t++) {
                const float *x = xs + t * cols + b * BLOCK;
                float s = 0.0f;
                for (int j = 0; j < BLOCK; j++) s += w[j] * x[j];
                total[t] += s * scale;
            }
        }
        for (int64_t t = 0; t < tokens; t++) acc[t * rows + r] = total[t];
    }
}

/* ---- MXFP4 rows: AVX2 + FMA ---------------------------------------------------------------------------------- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

__attribute__((target("avx2,fma"))) static void mxfp4_rows_avx2(const uint8_t *blocks, const uint8_t *scales,
                                                                 int64_t cols, const float *xs, int64_t tokens,
                                                                 int64_t row0, int64_t row1, float *acc,
                                                                 int64_t rows) {
    int64_t nb = cols / BLOCK;
    const __m128i lut = _mm_loadu_si128((const __m128i *)TWICE_E2M1);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    for (int64_t r = row0; r < row1; r++) {
        __m256 total[MAX_TOKENS];
        for (int64_t t = 0; t < tokens; t++) total[t] = _mm256_setzero_ps();
        const uint8_t *q = blocks + r * nb * BLOCK_BYTES;
        const uint8_t *s = scales + r * nb;
        for (int64_t b = 0; b < nb; b++) {
            __m128i bytes = _mm_loadu_si128((const __m128i *)(q + b * BLOCK_BYTES));
            __m128i even = _mm_shuffle_epi8(lut, _mm_and_si128(bytes, low4));
            __m128i odd = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
            __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(even));
            __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(even, 8)));
            __m256 w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(odd));
            __m256 w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(odd, 8)));
            __m256 scale = _mm256_set1_ps(HALF_SCALE[s[b]]);
            for (int64_t t = 0; t < tokens; t++) {
                const float *x = xs + t * cols + b * BLOCK;
                __m256 sum = _mm256_mul_ps(w0, _mm256_loadu_ps(x));
                sum = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + 8), sum);
                sum = _mm256_fmadd_ps(w2, _mm256_loadu_ps(x + 16), sum);
                sum = _mm256_fmadd_ps(w3, _mm256_loadu_ps(x + 24), sum);
                total[t] = _mm256_fmadd_ps(sum, scale, total[t]);
            }
        }
        for (int64_t t = 0; t < tokens; t++) acc[t * rows + r] = hsum256(total[t]);
    }
}

/* Two 8-float vectors of weights from row + k: bf16 widened by a shift, float32 as it is. */
__attribute__((target("avx2,fma"), always_inline)) static inline void load16_bf16(const void *row, int64_t k, __m256 *lo, __m256 *hi) {
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + k));
    *lo = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(h)), 16));
    *hi = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(h, 1)), 16));
}

__attribute__((target("avx2,fma"), always_inline)) static inline void load16_f32(const void *row, int64_t k, __m256 *lo, __m256 *hi) {
    *lo = _mm256_loadu_ps((const float *)row + k);
    *hi = _mm256_loadu_ps((const float *)row + k + 8);
}

/* Dense rows (bf16 or float32 weights [rows, cols]) times up to 4 activation rows at a time: 8 accumulators. */
/* always_inline: each caller passes a constant is_bf16, so each gets its own loop with the branch folded away */
__attribute__((target("avx2,fma"), always_inline)) static inline void dense_rows_avx2(const void *w, int is_bf16, int64_t cols,
                                                                        const float *xs, int64_t tokens, int64_t row0,
                                                                        int64_t row1, float *acc, int64_t rows) {
    size_t element_size = is_bf16 ? 2 : 4;
    for (int64_t r = row0; r < row1; r++) {
        const void *row = (const char *)w + r * cols * element_size;
        for (int64_t t0 = 0; t0 < tokens; t0 += 4) {
            int64_t n = tokens - t0 < 4 ? tokens - t0 : 4;
            __m256 a[4][2];
            for (int64_t t = 0; t < n; t++) a[t][0] = a[t][1] = _mm256_setzero_ps();
            int64_t k = 0;
            for (; k + 16 <= cols; k += 16) {
                __m256 lo, hi;
                if (is_bf16)
                    load16_bf16(row, k, &lo, &hi);
                else
                    load16_f32(row, k, &lo, &hi);
                for (int64_t t = 0; t < n; t++) {
                    const float *x = xs + (t0 + t) * cols + k;
                    a[t][0] = _mm256_fmadd_ps(lo, _mm256_loadu_ps(x), a[t][0]);
                    a[t][1] = _mm256_fmadd_ps(hi, _mm256_loadu_ps(x + 8), a[t][1]);
                }
            }
            for (int64_t t = 0; t < n; t++) {
                const float *x = xs + (t0 + t) * cols;
                float total = hsum256(_mm256_add_ps(a[t][0], a[t][1]));
                for (int64_t j = k; j < cols; j++) total += element(row, j, is_bf16) * x[j];
                acc[(t0 + t) * rows + r] = total;
            }
        }
    }
}

__attribute__((target("avx2,fma"))) static void bf16_rows_avx2(const uint16_t *w, int64_t cols, const float *xs,
                                                                int64_t tokens, int64_t row0, int64_t row1,
                                                                float *acc, int64_t rows) {
    dense_rows_avx2(w, 1, cols, xs, tokens, row0, row1, acc, rows);
}

__attribute__((target("avx2,fma"))) static void f32_rows_avx2(const float *w, int64_t cols, const float *xs,
                                                               int64_t tokens, int64_t row0, int64_t row1, float *acc,
                                                               int64_t rows) {
    dense_rows_avx2(w, 0, cols, xs, tokens, row0, row1, acc, rows);
}

/* bf16 activations on CPUs with AVX512-BF16. Four blocks a step: their 64 code bytes are one load; the 128
 * codes become bf16 values by two 16-entry byte lookups (vpshufb: the value's low and high bytes) interleaved
 * back into words, which leaves 128-bit lane k of each of the four weight vectors holding 8 values of block k;
 * the activations were reordered to match (group_order). Four vdpbf16ps multiply them with the activations,
 * products exact in float32 and summed in pairs (denormal activations, below 1e-38, count as zero there), so
 * lane k of the sum belongs to block k alone and one multiply by [s0 x4, s1 x4, s2 x4, s3 x4] scales all four.
 * A scale is the E8M0 byte shifted into a float's exponent (exact: a power of two), 0 and 0xFF fixed up to
 * 2**-127 and NaN. Blocks past the last whole group (cols / 32 not a multiple of 4) go one at a time as the
 * HF nibbles come (split order), their 32 codes as 16-bit indices into a 32-entry word table (vpermw).
 * Measured on this project's Zen 4 VM, 2 threads, a 20b gate_up: 1.4-1.6x the one-block-a-step loop. */
#define GROUP 4 /* blocks a step */

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void mxfp4_rows_avx512bf16(
    const uint8_t *blocks, const uint8_t *scales, int64_t cols, const uint16_t *xs, int64_t tokens, int64_t row0,
    int64_t row1, float *acc, int64_t rows) {
    int64_t nb = cols / BLOCK, groups = nb / GROUP;
    uint8_t low_bytes[16], high_bytes[16];
    uint16_t words[32];
    for (int i = 0; i < 16; i++) {
        float v = (float)TWICE_E2M1[i] * 0.5f;
        uint32_t bits;
        memcpy(&bits, &v, 4); /* bf16 is the top half: exact, E2M1 values have 2 significant bits */
        low_bytes[i] = (uint8_t)(bits >> 16);
        high_bytes[i] = (uint8_t)(bits >> 24);
        words[i] = words[i + 16] = (uint16_t)(bits >> 16);
    }
    const __m512i word_table = _mm512_loadu_si512(words);
    const __m512i low_table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)low_bytes));
    const __m512i high_table = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)high_bytes));
    const __m512i low4 = _mm512_set1_epi8(0x0F);
    const __m128i spread = _mm_set_epi8(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0); /* each scale 4 times */
    const __m512i nan_bits = _mm512_set1_epi32(255 << 23), tiny = _mm512_set1_epi32(0x00400000);
    const __m512i quiet_nan = _mm512_set1_epi32(0x7FC00000);
    for (int64_t r = row0; r < row1; r++) {
        __m512 total[MAX_TOKENS];
        for (int64_t t = 0; t < tokens; t++) total[t] = _mm512_setzero_ps();
        const uint8_t *q = blocks + r * nb * BLOCK_BYTES;
        const uint8_t *s = scales + r * nb;
        for (int64_t g = 0; g < groups; g++) {
            __m512i bytes = _mm512_loadu_si512(q + g * GROUP * BLOCK_BYTES);
            __m512i even = _mm512_and_si512(bytes, low4), odd = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low4);
            __m512i even_low = _mm512_shuffle_epi8(low_table, even), even_high = _mm512_shuffle_epi8(high_table, even);
            __m512i odd_low = _mm512_shuffle_epi8(low_table, odd), odd_high = _mm512_shuffle_epi8(high_table, odd);
            __m512bh w0 = (__m512bh)_mm512_unpacklo_epi8(even_low, even_high);
            __m512bh w1 = (__m512bh)_mm512_unpackhi_epi8(even_low, even_high);
            __m512bh w2 = (__m512bh)_mm512_unpacklo_epi8(odd_low, odd_high);
            __m512bh w3 = (__m512bh)_mm512_unpackhi_epi8(odd_low, odd_high);
            int32_t four;
            memcpy(&four, s + g * GROUP, 4);
            __m512i exponent = _mm512_cvtepu8_epi32(_mm_shuffle_epi8(_mm_cvtsi32_si128(four), spread));
            __m512i bits = _mm512_slli_epi32(exponent, 23);
            bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512()), tiny);
            bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(bits, nan_bits), quiet_nan);
            __m512 scale = _mm512_castsi512_ps(bits);
            for (int64_t t = 0; t < tokens; t++) {
                const uint16_t *x = xs + t * cols + g * GROUP * BLOCK;
                __m512 sum = _mm512_dpbf16_ps(_mm512_setzero_ps(), w0, (__m512bh)_mm512_loadu_si512(x));
                sum = _mm512_dpbf16_ps(sum, w1, (__m512bh)_mm512_loadu_si512(x + 32));
                sum = _mm512_dpbf16_ps(sum, w2, (__m512bh)_mm512_loadu_si512(x + 64));
                sum = _mm512_dpbf16_ps(sum, w3, (__m512bh)_mm512_loadu_si512(x + 96));
                total[t] = _mm512_fmadd_ps(sum, scale, total[t]);
            }
        }
        for (int64_t b = groups * GROUP; b < nb; b++) {
            __m128i bytes = _mm_loadu_si128((const __m128i *)(q + b * BLOCK_BYTES));
            __m128i even = _mm_and_si128(bytes, _mm512_castsi512_si128(low4));
            __m128i odd = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm512_castsi512_si128(low4));
            __m512i codes = _mm512_cvtepu8_epi16(_mm256_set_m128i(odd, even));
            __m512bh w = (__m512bh)_mm512_permutexvar_epi16(codes, word_table);
            __m512 scale = _mm512_set1_ps(2.0f * HALF_SCALE[s[b]]);
            for (int64_t t = 0; t < tokens; t++) {
                __m512bh x = (__m512bh)_mm512_loadu_si512(xs + t * cols + b * BLOCK);
                total[t] = _mm512_fmadd_ps(_mm512_dpbf16_ps(_mm512_setzero_ps(), w, x), scale, total[t]);
            }
        }
        for (int64_t t = 0; t < tokens; t++) acc[t * rows + r] = _mm512_reduce_add_ps(total[t]);
    }
}

/* bf16 weights times bf16 activations on CPUs with AVX512-BF16: one vdpbf16ps per 32 weights (products exact in
 * float32, summed in pairs; denormal inputs count as zero there), two accumulators a token, the row's last
 * cols % 32 through a masked load (zeros past the end add nothing). Two instructions per 64 bytes of weights
 * leave the loads the whole machine: the AVX2 loop widens every weight to float32 first. */
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void bf16_rows_avx512bf16(
    const uint16_t *w, int64_t cols, const uint16_t *xs, int64_t tokens, int64_t row0, int64_t row1, float *acc,
    int64_t rows) {
    __mmask32 tail = (__mmask32)((1ull << (cols % 32)) - 1);
    for (int64_t r = row0; r < row1; r++) {
        const uint16_t *row = w + r * cols;
        for (int64_t t0 = 0; t0 < tokens; t0 += 4) {
            int64_t n = tokens - t0 < 4 ? tokens - t0 : 4;
            __m512 a[4][2];
            for (int64_t t = 0; t < n; t++) a[t][0] = a[t][1] = _mm512_setzero_ps();
            int64_t k = 0;
            for (; k + 64 <= cols; k += 64) {
                __m512bh w0 = (__m512bh)_mm512_loadu_si512(row + k), w1 = (__m512bh)_mm512_loadu_si512(row + k + 32);
                for (int64_t t = 0; t < n; t++) {
                    const uint16_t *x = xs + (t0 + t) * cols + k;
                    a[t][0] = _mm512_dpbf16_ps(a[t][0], w0, (__m512bh)_mm512_loadu_si512(x));
                    a[t][1] = _mm512_dpbf16_ps(a[t][1], w1, (__m512bh)_mm512_loadu_si512(x + 32));
                }
            }
            for (; k < cols; k += 32) {
                __mmask32 m = k + 32 <= cols ? (__mmask32)~0u : tail;
                __m512bh wk = (__m512bh)_mm512_maskz_loadu_epi16(m, row + k);
                for (int64_t t = 0; t < n; t++) {
                    __m512bh x = (__m512bh)_mm512_maskz_loadu_epi16(m, xs + (t0 + t) * cols + k);
                    a[t][0] = _mm512_dpbf16_ps(a[t][0], wk, x);
                }
            }
            for (int64_t t = 0; t < n; t++) acc[(t0 + t) * rows + r] = _mm512_reduce_add_ps(_mm512_add_ps(a[t][0], a[t][1]));
        }
    }
}

/* The activation order mxfp4_rows_avx512bf16 reads, for one row of x [cols]: each whole group of four blocks as
 * four 32-value chunks (c = 0..3: even elements 0-7, even 8-15, odd 0-7, odd 8-15 of each block; chunk c holds 8
 * of block k at 8k), and the blocks after the last group in split order (16 even elements, then 16 odd). */
static void group_order(const uint16_t *x, int64_t cols, uint16_t *out) {
    int64_t grouped = cols / (GROUP * BLOCK) * (GROUP * BLOCK);
    for (int64_t g = 0; g < grouped; g += GROUP * BLOCK) {
        uint16_t *dst = out + g;
        for (int chunk = 0; chunk < 4; chunk++)
            for (int k = 0; k < GROUP; k++)
                for (int j = 0; j < 8; j++) {
                    int odd = chunk >> 1, pair = (chunk & 1) * 8 + j; /* element 2 * pair + odd of block k */
                    *dst++ = x[g + k * BLOCK + 2 * pair + odd];
                }
    }
    for (int64_t b = grouped; b < cols; b += BLOCK)
        for (int j = 0; j < 16; j++) {
            out[b + j] = x[b + 2 * j];
            out[b + 16 + j] = x[b + 2 * j + 1];
        }
}

#else
#define HAVE_AVX2_PATH 0
#endif

static void dense_rows_portable(const void *w, int is_bf16, int64_t cols, const float *xs, int64_t tokens,
                                int64_t row0, int64_t row1, float *acc, int64_t rows) {
    size_t element_size = is_bf16 ? 2 : 4;
    for (int64_t r = row0; r < row1; r++) {
        const void *row = (const char *)w + r * cols * element_size;
        for (int64_t t = 0; t < tokens; t++) {
            const float *x = xs + t * cols;
            float total = 0.0f;
            for (int64_t k = 0; k < cols; k++) total += element(row, k, is_bf16) * x[k];
            acc[t * rows + r] = total;
        }
    }
}

/* MXFP4_CPU_PORTABLE=1 (read once) runs the portable C loops: how the tests check them on a machine with AVX2. */
static int portable_only(void) {
    static int known = -1;
    if (known < 0) {
        const char *value = getenv("MXFP4_CPU_PORTABLE");
        known = value != NULL && value[0] == '1';
    }
    return known;
}

static int use_avx512bf16(void) {
#if HAVE_AVX2_PATH
    static int known = -1;
    if (known < 0)
        known = !portable_only() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512bf16");
    return known;
#else
    return 0;
#endif
}

static int use_avx2(void) {
#if HAVE_AVX2_PATH
    static int known = -1;
    if (known < 0) known = !portable_only() && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return known;
#else
    return 0;
#endif
}

/* ---- the calls: rows split over threads ----------------------------------------------------------------------- */

typedef struct {
    int kind; /* 0 MXFP4, 1 BF16, 2 F32 */
    const uint8_t *blocks, *scales;
    const uint16_t *bf16;
    const float *f32;
    int64_t rows, cols, tokens;
    const float *xs; /* [tokens, cols]; MXFP4: reordered even/odd */
    const uint16_t *xs_bf16; /* bf16 activations on AVX512-BF16 (MXFP4: in group_order), or NULL */
    const float *bias; /* [rows] or NULL */
    float *y;          /* [tokens, rows] */
    /* fused SwiGLU over interleaved (gate, up) row pairs: out [tokens, rows / 2] */
    int swiglu;
    float limit, alpha;
    float *out;
    int64_t row0, row1;
} Task;

static void finish_rows(const Task *t) {
    for (int64_t k = 0; k < t->tokens; k++) {
        float *y = t->y + k * t->rows;
        if (t->bias)
            for (int64_t r = t->row0; r < t->row1; r++) y[r] += t->bias[r];
        if (!t->swiglu) continue;
        float *o = t->out + k * (t->rows / 2);
        for (int64_t r = t->row0; r < t->row1; r += 2) {
            float gate = fminf(y[r], t->limit); /* NaN passes through fminf only as the other operand: keep it */
            if (isnan(y[r])) gate = y[r];
            float up = y[r + 1];
            if (!isnan(up)) up = fmaxf(fminf(up, t->limit), -t->limit);
            float glu = gate / (1.0f + expf(-t->alpha * gate));
            o[r / 2] = glu * (up + 1.0f);
        }
    }
}

static void *run_task(void *arg) {
    Task *t = (Task *)arg;
    if (t->kind == 0) {
        if (t->xs_bf16) {
#if HAVE_AVX2_PATH
            mxfp4_rows_avx512bf16(t->blocks, t->scales, t->cols, t->xs_bf16, t->tokens, t->row0, t->row1, t->y,
                                  t->rows);
#endif
        } else if (use_avx2()) {
#if HAVE_AVX2_PATH
            mxfp4_rows_avx2(t->blocks, t->scales, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
#endif
        } else {
            mxfp4_rows_portable(t->blocks, t->scales, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
        }
    } else if (t->kind == 1) {
        if (t->xs_bf16) {
#if HAVE_AVX2_PATH
            bf16_rows_avx512bf16(t->bf16, t->cols, t->xs_bf16, t->tokens, t->row0, t->row1, t->y, t->rows);
#endif
        } else if (use_avx2()) {
#if HAVE_AVX2_PATH
            bf16_rows_avx2(t->bf16, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
#endif
        } else {
            dense_rows_portable(t->bf16, 1, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
        }
    } else {
        if (use_avx2()) {
#if HAVE_AVX2_PATH
            f32_rows_avx2(t->f32, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
#endif
        } else {
            dense_rows_portable(t->f32, 0, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
        }
    }
    finish_rows(t);
    return NULL;
}

static void run_rows(void *context, int64_t begin, int64_t end) {
    Task task = *(const Task *)context;
    task.row0 = begin;
    task.row1 = end;
    run_task(&task);
}

/* even ranges: a SwiGLU pair never straddles two threads */
static void run_split(Task *base, int threads) { pool_run(run_rows, base, base->rows, 2, threads); }

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for MXFP4 W (HF blocks [rows, cols/32, 16], scales
 * [rows, cols/32]); scratch: tokens * cols floats. With swiglu, out[t, r/2] = clamped SwiGLU of the pair. */
void mxg_mxfp4(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t cols, const float *x,
               int64_t tokens, const float *bias, float *y, float *scratch, int swiglu, float limit, float alpha,
               float *out, int threads) {
    pthread_once(&tables_once, build_tables);
    split_even_odd(x, tokens, cols, scratch);
    Task t = {0, blocks, scales, NULL, NULL, rows, cols, tokens, scratch, NULL, bias, y, swiglu, limit, alpha, out,
              0, rows};
    run_split(&t, threads);
}

/* mxg_mxfp4 for bf16 activations: x bf16 [T, K] (scratch: T * K uint16). Returns 0 (nothing done) where the CPU
 * lacks AVX512-BF16; the caller then widens x to float32 and calls mxg_mxfp4. */
int mxg_mxfp4_bf16x(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t cols, const uint16_t *x,
                    int64_t tokens, const float *bias, float *y, uint16_t *scratch, int swiglu, float limit,
                    float alpha, float *out, int threads) {
    if (!use_avx512bf16()) return 0;
    pthread_once(&tables_once, build_tables);
#if HAVE_AVX2_PATH
    for (int64_t t = 0; t < tokens; t++) group_order(x + t * cols, cols, scratch + t * cols);
#endif
    Task t = {0, blocks, scales, NULL, NULL, rows, cols, tokens, NULL, scratch, bias, y, swiglu, limit, alpha, out,
              0, rows};
    run_split(&t, threads);
    return 1;
}

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for bf16 W [rows, cols]. */
void mxg_bf16(const uint16_t *w, int64_t rows, int64_t cols, const float *x, int64_t tokens, const float *bias,
              float *y, int threads) {
    Task t = {1, NULL, NULL, w, NULL, rows, cols, tokens, x, NULL, bias, y, 0, 0.0f, 0.0f, NULL, 0, rows};
    run_split(&t, threads);
}

/* mxg_bf16 for bf16 activations x [T, K]. Returns 0 (nothing done) where the CPU lacks AVX512-BF16; the caller
 * then widens x to float32 and calls mxg_bf16. */
int mxg_bf16_bf16x(const uint16_t *w, int64_t rows, int64_t cols, const uint16_t *x, int64_t tokens, const float *bias,
                   float *y, int threads) {
    if (!use_avx512bf16()) return 0;
    Task t = {1, NULL, NULL, w, NULL, rows, cols, tokens, NULL, x, bias, y, 0, 0.0f, 0.0f, NULL, 0, rows};
    run_split(&t, threads);
    return 1;
}

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for float32 W [rows, cols]. */
void mxg_f32(const float *w, int64_t rows, int64_t cols, const float *x, int64_t tokens, const float *bias, float *y,
             int threads) {
    Task t = {2, NULL, NULL, NULL, w, rows, cols, tokens, x, NULL, bias, y, 0, 0.0f, 0.0f, NULL, 0, rows};
    run_split(&t, threads);
}

int mxg_max_tokens(void) { return MAX_TOKENS; }

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_gemv", "CPU GEMV kernels (called through ctypes).", -1, NULL};
PyMODINIT_FUNC PyInit__cpu_gemv(void) { return PyModule_Create(&module); }
