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
#include <unistd.h>

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
static float SCALE[256];      /* 2**(s - 127), NaN for 0xFF */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void build_tables(void) {
    for (int s = 0; s < 255; s++) HALF_SCALE[s] = ldexpf(1.0f, s - 128);
    HALF_SCALE[255] = NAN;
    for (int s = 0; s < 256; s++) SCALE[s] = 2.0f * HALF_SCALE[s];
}

/* The bf16 form of each code's E2M1 value (exact: E2M1 values have 2 significant bits): the byte-lookup kernels
 * (AVX2, AVX512-BF16) take their low and high byte tables from it. */
static void e2m1_bf16(uint16_t out[16]) {
    for (int i = 0; i < 16; i++) {
        float v = (float)TWICE_E2M1[i] * 0.5f;
        uint32_t bits;
        memcpy(&bits, &v, 4);
        out[i] = (uint16_t)(bits >> 16);
    }
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

/* x [T, K] in the order mxfp4_rows_avx2 reads: each pair of blocks (b, b + 1) as eight 8-value chunks, chunk i
 * holding 4 elements of block b then the same 4 of block b + 1 (i < 4: even elements 8i/2.., i >= 4: odd ones),
 * and an odd last block in split order (16 even elements, then 16 odd). */
static const int PAIR_CHUNK_BASE[8] = {0, 2, 16, 18, 1, 3, 17, 19};

static void pair_order(const float *x, int64_t tokens, int64_t cols, float *out) {
    int64_t nb = cols / BLOCK;
    for (int64_t t = 0; t < tokens; t++) {
        const float *src = x + t * cols;
        float *dst = out + t * cols;
        for (int64_t p = 0; p + 1 < nb; p += 2)
            for (int i = 0; i < 8; i++)
                for (int half = 0; half < 2; half++)
                    for (int j = 0; j < 4; j++) *dst++ = src[(p + half) * BLOCK + PAIR_CHUNK_BASE[i] + 4 * j];
        if (nb % 2)
            for (int j = 0; j < 16; j++) {
                dst[j] = src[(nb - 1) * BLOCK + 2 * j];
                dst[16 + j] = src[(nb - 1) * BLOCK + 2 * j + 1];
            }
    }
}

/* x [T, K] in the order mxfp4_rows_avx512 reads: each group of four blocks (128 elements) as eight 16-value
 * vectors, vector k holding elements 8i + k (i = 0..15), and the n = 4 * (cols / 32 % 4) elements after the last
 * whole group likewise as eight n-value vectors. Lane i of vector k then meets the code in nibble k of the
 * weights' 32-bit word i: 32-bit words, like 16-byte blocks, come in the order of the elements. */
static void octet_order(const float *x, int64_t tokens, int64_t cols, float *out) {
    for (int64_t t = 0; t < tokens; t++) {
        const float *src = x + t * cols;
        float *dst = out + t * cols;
        for (int64_t g = 0; g < cols; g += 4 * BLOCK) {
            int64_t lanes = (cols - g < 4 * BLOCK ? cols - g : 4 * BLOCK) / 8;
            for (int k = 0; k < 8; k++)
                for (int64_t i = 0; i < lanes; i++) *dst++ = src[g + 8 * i + k];
        }
    }
}

/* x [T, K] (float32, or bf16 widened as it goes) in the order bf16_rows_avx2 reads: each whole 16 elements as
 * their 8 even ones, then the 8 odd ones; the last K % 16 as they are. */
static void split16(const void *x, int is_bf16, int64_t tokens, int64_t cols, float *out) {
    int64_t whole = cols / 16 * 16;
    for (int64_t t = 0; t < tokens; t++) {
        int64_t src = t * cols;
        float *dst = out + t * cols;
        for (int64_t k = 0; k < whole; k += 16)
            for (int j = 0; j < 8; j++) {
                dst[k + j] = element(x, src + k + 2 * j, is_bf16);
                dst[k + 8 + j] = element(x, src + k + 2 * j + 1, is_bf16);
            }
        for (int64_t k = whole; k < cols; k++) dst[k] = element(x, src + k, is_bf16);
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

/* ---- MXFP4 rows with int8 activations (opt-in, approximate: llama.cpp's q8_0 arithmetic) ------------------- */

/* Where element j of block b of a row of nb blocks sits among the int8 activations: blocks go in pairs, as the
 * AVX2 loop reads them (32 code bytes a step): [block b's 16 even elements | b + 1's even | b's odd | b + 1's odd];
 * an odd last block alone as [even | odd]. Low nibbles meet even elements. */
static inline int64_t q8_position(int64_t b, int64_t nb, int j) {
    int half = j % 2, i = j / 2;
    if (b / 2 * 2 + 1 < nb) return b / 2 * 64 + half * 32 + b % 2 * 16 + i;
    return b * BLOCK + half * 16 + i;
}

/* One block of 32 activations as int8 with one float32 scale: d = max|x| / 127, q = x / d rounded to the nearest
 * integer (ties to even), so |x - d q| <= d / 2 for each element. A block holding a NaN or an infinity gets d = NaN
 * (every product it enters is NaN, as the float32 products' would be NaN or infinite) and codes 0. Returns d. */
static float quantize_block(const float *xb, int8_t q[BLOCK]) {
    float amax = 0.0f;
    int finite = 1;
    for (int j = 0; j < BLOCK; j++) {
        if (!isfinite(xb[j])) finite = 0;
        float a = fabsf(xb[j]);
        if (a > amax) amax = a;
    }
    float d = finite ? amax / 127.0f : NAN;
    for (int j = 0; j < BLOCK; j++) /* within [-127, 127]: |x| <= amax, and amax / (amax / 127) rounds to 127 */
        q[j] = (int8_t)(finite && d > 0.0f ? nearbyintf(xb[j] / d) : 0.0f);
    return d;
}

/* One token's x [cols] quantized a block at a time (quantize_block), the codes in q8_position's order. A block's
 * products are then exact integers (|2 E2M1| <= 12, |q| <= 127: four of them sum within 16 bits, a block's 32
 * within 32 bits) and one float32 multiply by 2**(s - 128) d scales each block. */
static void quantize_q8(const float *x, int64_t cols, int8_t *q, float *d) {
    int64_t nb = cols / BLOCK;
    for (int64_t b = 0; b < nb; b++) {
        int8_t codes[BLOCK];
        d[b] = quantize_block(x + b * BLOCK, codes);
        for (int j = 0; j < BLOCK; j++) q[q8_position(b, nb, j)] = codes[j];
    }
}

/* Many tokens' int8 activations as the int8 panel GEMM reads them (pack_q8). */
typedef struct {
    const int8_t *codes;   /* tiles [K / 4][16][4] */
    const float *scales;   /* tiles [nb][16]: d of each (block, token); 0 past the last token */
    const int32_t *offset; /* tiles [nb][16]: Q8_OFFSET x the block's codes summed */
} PackedQ8;

/* Block b's 32 codes (16 bytes at q) times its int8 activations, summed exactly; the caller scales it. */
static inline int32_t block_sum_q8(const uint8_t *q, const int8_t *xq, int64_t b, int64_t nb) {
    int32_t sum = 0;
    for (int i = 0; i < 16; i++)
        sum += TWICE_E2M1[q[i] & 15] * xq[q8_position(b, nb, 2 * i)] +
               TWICE_E2M1[q[i] >> 4] * xq[q8_position(b, nb, 2 * i + 1)];
    return sum;
}

static void mxfp4_rows_q8_portable(const uint8_t *blocks, const uint8_t *scales, int64_t cols, const int8_t *xq,
                                   const float *xd, int64_t row0, int64_t row1, float *acc) {
    int64_t nb = cols / BLOCK;
    for (int64_t r = row0; r < row1; r++) {
        float total = 0.0f;
        for (int64_t b = 0; b < nb; b++)
            total += (float)block_sum_q8(blocks + (r * nb + b) * BLOCK_BYTES, xq, b, nb) *
                     (HALF_SCALE[scales[r * nb + b]] * xd[b]);
        acc[r] = total;
    }
}

/* ---- MXFP4 rows: AVX2 + FMA ---------------------------------------------------------------------------------- */
/* MXFP4_PORTABLE builds what a CPU other than x86 gets (tests/model/test_portable_kernels.py builds it here). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(MXFP4_PORTABLE)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#include "cpu_exp.h"

/* The row loops ask for the weights PREFETCH_AHEAD bytes ahead of those they decode (into L2): the hardware's own
 * prefetcher keeps within a 4 KB page and, behind a loop that spends ~10 cycles on each 32 bytes, did not keep the
 * reads in flight. Measured on the Intel Xeon VM (2026-12-03), a 20b gate_up from memory on 2 threads: the AVX2
 * MXFP4 loop 7.9 -> 16.7 GB/s, the AVX512-BF16 one 10.7 -> 18.4; 4 KB ahead gave 13.9, 32 KB no more than 16 KB.
 * Addresses past the end are harmless (a prefetch never faults). */
#define PREFETCH_AHEAD 16384
#define prefetch_ahead(p) _mm_prefetch((const char *)(p) + PREFETCH_AHEAD, _MM_HINT_T1)

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

/* The 64 weights of a pair of blocks (32 code bytes at q) as eight float32 vectors, in the order pair_order puts
 * the activations (see mxfp4_rows_avx2). */
__attribute__((target("avx2,fma"), always_inline)) static inline void pair_weights(const uint8_t *q, __m256i low_table,
                                                                                  __m256i high_table, __m256 w[8]) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), high = _mm256_set1_epi32((int)0xFFFF0000u);
    __m256i bytes = _mm256_loadu_si256((const __m256i *)q);
    __m256i even = _mm256_and_si256(bytes, low4), odd = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
    __m256i even_low = _mm256_shuffle_epi8(low_table, even), even_high = _mm256_shuffle_epi8(high_table, even);
    __m256i odd_low = _mm256_shuffle_epi8(low_table, odd), odd_high = _mm256_shuffle_epi8(high_table, odd);
    __m256i words[4] = {_mm256_unpacklo_epi8(even_low, even_high), _mm256_unpackhi_epi8(even_low, even_high),
                        _mm256_unpacklo_epi8(odd_low, odd_high), _mm256_unpackhi_epi8(odd_low, odd_high)};
    for (int i = 0; i < 4; i++) {
        w[2 * i] = _mm256_castsi256_ps(_mm256_slli_epi32(words[i], 16));
        w[2 * i + 1] = _mm256_castsi256_ps(_mm256_and_si256(words[i], high));
    }
}

/* total + the pair's weights w times x (64 activations in pair_order), scaled by [s_b x4, s_b+1 x4]. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 pair_sum(const __m256 w[8], const float *x,
                                                                                __m256 scale, __m256 total) {
    __m256 a = _mm256_mul_ps(w[0], _mm256_loadu_ps(x));
    __m256 b = _mm256_mul_ps(w[4], _mm256_loadu_ps(x + 32));
    a = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), a);
    b = _mm256_fmadd_ps(w[5], _mm256_loadu_ps(x + 40), b);
    a = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), a);
    b = _mm256_fmadd_ps(w[6], _mm256_loadu_ps(x + 48), b);
    a = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), a);
    b = _mm256_fmadd_ps(w[7], _mm256_loadu_ps(x + 56), b);
    return _mm256_fmadd_ps(_mm256_add_ps(a, b), scale, total);
}

__attribute__((target("avx2,fma"), always_inline)) static inline __m256 pair_scale(const uint8_t *s) {
    return _mm256_set_m128(_mm_set1_ps(SCALE[s[1]]), _mm_set1_ps(SCALE[s[0]]));
}

/* The 32 codes of one block (16 bytes at q) as 2 * E2M1 integers in float32, split order (16 even elements, then
 * 16 odd), four vectors: exact; the caller applies the block's scale. */
__attribute__((target("avx2,fma"), always_inline)) static inline void block_twice_e2m1(const uint8_t *q, __m256 w[4]) {
    const __m128i lut = _mm_loadu_si128((const __m128i *)TWICE_E2M1), low4 = _mm_set1_epi8(0x0F);
    __m128i bytes = _mm_loadu_si128((const __m128i *)q);
    __m128i even = _mm_shuffle_epi8(lut, _mm_and_si128(bytes, low4));
    __m128i odd = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(bytes, 4), low4));
    w[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(even));
    w[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(even, 8)));
    w[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(odd));
    w[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(odd, 8)));
}

/* Two blocks a step: their 32 code bytes are one load (block b in the low 128-bit lane, b + 1 in the high one).
 * The codes become float32 values without a conversion instruction: two 16-entry byte lookups (vpshufb) give the
 * low and high bytes of each value's bf16 form (exact: E2M1 values have 2 significant bits), interleaving them
 * gives bf16 words, and a shift (the low word of each 32-bit lane) or a mask (the high word) gives float32s. Each
 * of the eight weight vectors then holds 4 values of block b in its low lane and 4 of block b + 1 in its high
 * lane, and the activations were put in the same order (pair_order), so one multiply by [s_b x4, s_b+1 x4]
 * scales a step's sum (a power of two: exact). An odd last block goes alone, its 32 codes widened by int8 ->
 * float32 conversions (split order). Shuffles bound the loop (8 per 64 weights). Measured on an AVX2-only Zen 3
 * (2.45 GHz), a 20b-wide 65,536-row matrix from memory: 5.3-5.7 GB/s on one thread and 7.9-9.5 on two, where
 * the one-block-a-step loop with int8 -> float32 conversions it replaced read 3.3 and 6.3. */
__attribute__((target("avx2,fma"))) static void mxfp4_rows_avx2(const uint8_t *blocks, const uint8_t *scales,
                                                                 int64_t cols, const float *xs, int64_t tokens,
                                                                 int64_t row0, int64_t row1, float *acc,
                                                                 int64_t rows) {
    int64_t nb = cols / BLOCK, pairs = nb / 2;
    uint16_t bf16[16];
    uint8_t low_bytes[16], high_bytes[16];
    e2m1_bf16(bf16);
    for (int i = 0; i < 16; i++) {
        low_bytes[i] = (uint8_t)bf16[i];
        high_bytes[i] = (uint8_t)(bf16[i] >> 8);
    }
    const __m256i low_table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)low_bytes));
    const __m256i high_table = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)high_bytes));
    for (int64_t r = row0; r < row1; r++) {
        __m256 total[MAX_TOKENS], w[8];
        for (int64_t t = 0; t < tokens; t++) total[t] = _mm256_setzero_ps();
        const uint8_t *q = blocks + r * nb * BLOCK_BYTES;
        const uint8_t *s = scales + r * nb;
        int64_t p = 0;
        if (tokens == 1) { /* decoding: two pairs a step, two running totals, everything in registers */
            __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
            for (; p + 2 <= pairs; p += 2) {
                prefetch_ahead(q + p * 2 * BLOCK_BYTES); /* one 64-byte line a step */
                pair_weights(q + p * 2 * BLOCK_BYTES, low_table, high_table, w);
                t0 = pair_sum(w, xs + p * 2 * BLOCK, pair_scale(s + 2 * p), t0);
                pair_weights(q + (p + 1) * 2 * BLOCK_BYTES, low_table, high_table, w);
                t1 = pair_sum(w, xs + (p + 1) * 2 * BLOCK, pair_scale(s + 2 * p + 2), t1);
            }
            total[0] = _mm256_add_ps(t0, t1);
        }
        for (; p < pairs; p++) {
            if (p % 2 == 0) prefetch_ahead(q + p * 2 * BLOCK_BYTES);
            pair_weights(q + p * 2 * BLOCK_BYTES, low_table, high_table, w);
            __m256 scale = pair_scale(s + 2 * p);
            for (int64_t t = 0; t < tokens; t++) total[t] = pair_sum(w, xs + t * cols + p * 2 * BLOCK, scale, total[t]);
        }
        if (nb % 2) { /* the last block alone, in split order */
            int64_t b = nb - 1;
            __m256 v[4];
            block_twice_e2m1(q + b * BLOCK_BYTES, v);
            __m256 scale = _mm256_set1_ps(HALF_SCALE[s[b]]);
            for (int64_t t = 0; t < tokens; t++) {
                const float *x = xs + t * cols + b * BLOCK;
                __m256 sum = _mm256_mul_ps(v[0], _mm256_loadu_ps(x));
                sum = _mm256_fmadd_ps(v[1], _mm256_loadu_ps(x + 8), sum);
                sum = _mm256_fmadd_ps(v[2], _mm256_loadu_ps(x + 16), sum);
                sum = _mm256_fmadd_ps(v[3], _mm256_loadu_ps(x + 24), sum);
                total[t] = _mm256_fmadd_ps(sum, scale, total[t]);
            }
        }
        for (int64_t t = 0; t < tokens; t++) acc[t * rows + r] = hsum256(total[t]);
    }
}

/* Two 8-float vectors of weights from row + k: bf16 as its 8 even elements then its 8 odd ones (the 32-bit lane p
 * of the 16 loaded weights holds elements 2p and 2p + 1: a shift gives the first as a float32, a mask the second;
 * the activations come in that order, split16), float32 as it is. */
__attribute__((target("avx2,fma"), always_inline)) static inline void load16_bf16(const void *row, int64_t k, __m256 *lo, __m256 *hi) {
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + k));
    *lo = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    *hi = _mm256_castsi256_ps(_mm256_and_si256(h, _mm256_set1_epi32((int)0xFFFF0000u)));
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
                prefetch_ahead((const char *)row + k * element_size);
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

/* bf16 weights on AVX2: the 32-bit lane p of 16 loaded weights holds elements 2p (low half) and 2p + 1 (high
 * half), so a shift gives the even elements as float32s and a mask the odd ones, two instructions for 16 weights
 * where widening in order takes five; the activations come in the same order (split16). One token (decoding):
 * four accumulators, so the loop waits on no FMA's latency. Measured on an AVX2-only Zen 3, a 377 MB matrix:
 * 16.9 GB/s on 2 threads (a streaming sum of the same machine: 16-17), 11.3 on one; in-order widening with two
 * accumulators read 13.3 and 7.1 (a decode step of 20b's width is mostly this product: the unembedding). */
__attribute__((target("avx2,fma"))) static void bf16_rows_avx2(const uint16_t *w, int64_t cols, const float *xs,
                                                                int64_t tokens, int64_t row0, int64_t row1,
                                                                float *acc, int64_t rows) {
    if (tokens > 1) { /* a few tokens: 4 at a time */
        dense_rows_avx2(w, 1, cols, xs, tokens, row0, row1, acc, rows);
        return;
    }
    int64_t whole = cols / 16 * 16;
    for (int64_t r = row0; r < row1; r++) {
        const uint16_t *row = w + r * cols;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        __m256 even, odd;
        int64_t k = 0;
        for (; k + 32 <= whole; k += 32) {
            prefetch_ahead(row + k); /* one 64-byte line a step */
            load16_bf16(row, k, &even, &odd);
            a0 = _mm256_fmadd_ps(even, _mm256_loadu_ps(xs + k), a0);
            a1 = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xs + k + 8), a1);
            load16_bf16(row, k + 16, &even, &odd);
            a2 = _mm256_fmadd_ps(even, _mm256_loadu_ps(xs + k + 16), a2);
            a3 = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xs + k + 24), a3);
        }
        for (; k < whole; k += 16) {
            load16_bf16(row, k, &even, &odd);
            a0 = _mm256_fmadd_ps(even, _mm256_loadu_ps(xs + k), a0);
            a1 = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xs + k + 8), a1);
        }
        float total = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (int64_t j = whole; j < cols; j++) total += bf16_to_f32(row[j]) * xs[j];
        acc[r] = total;
    }
}

__attribute__((target("avx2,fma"))) static void f32_rows_avx2(const float *w, int64_t cols, const float *xs,
                                                               int64_t tokens, int64_t row0, int64_t row1, float *acc,
                                                               int64_t rows) {
    dense_rows_avx2(w, 0, cols, xs, tokens, row0, row1, acc, rows);
}

/* |w| and x with w's sign, through vpmaddubsw: sixteen sums of two products (at most 2 * 12 * 127: exact). */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256i products_q8(__m256i w, __m256i x) {
    return _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
}

/* Blocks b and b + 1 (32 code bytes at q) against their 64 int8 activations (q8_position's order): low and high
 * nibbles looked up (vpshufb) as 2 * E2M1 integers give the even and the odd weights of both blocks (b in the low
 * 128-bit lane), their products summed in 16 bits (at most 4 * 12 * 127), then in 32 bits (vpmaddwd): lanes 0-3
 * hold block b's sum, 4-7 block b + 1's, so one FMA by [scale_b x4, scale_b+1 x4] takes both into the total. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 pair_q8(const uint8_t *q, const int8_t *x,
                                                                               __m256i lut, __m256 scale,
                                                                               __m256 total) {
    const __m256i low4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256i bytes = _mm256_loadu_si256((const __m256i *)q);
    __m256i even = _mm256_shuffle_epi8(lut, _mm256_and_si256(bytes, low4));
    __m256i odd = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4));
    __m256i sums = _mm256_add_epi16(products_q8(even, _mm256_loadu_si256((const __m256i *)x)),
                                    products_q8(odd, _mm256_loadu_si256((const __m256i *)(x + 32))));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(sums, ones)), scale, total);
}

/* [scale_b x4, scale_b+1 x4] for blocks b and b + 1 (E8M0 bytes at s, activation scales at d): 2**(s - 128) d. */
__attribute__((target("avx2,fma"), always_inline)) static inline __m256 pair_scale_q8(const uint8_t *s,
                                                                                     const float *d) {
    return _mm256_set_m128(_mm_set1_ps(HALF_SCALE[s[1]] * d[1]), _mm_set1_ps(HALF_SCALE[s[0]] * d[0]));
}

/* MXFP4 rows times one token's int8 activations (quantize_q8): a pair of blocks takes 2 lookups and no widening
 * shuffles, where the float32 loop (mxfp4_rows_avx2) needs 12, which bound it on AVX2 (docs/cpu.md). Two running
 * totals; an odd last block through the portable arithmetic. */
__attribute__((target("avx2,fma"))) static void mxfp4_rows_q8_avx2(const uint8_t *blocks, const uint8_t *scales,
                                                                    int64_t cols, const int8_t *xq, const float *xd,
                                                                    int64_t row0, int64_t row1, float *acc) {
    int64_t nb = cols / BLOCK, pairs = nb / 2;
    const __m256i lut = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)TWICE_E2M1));
    for (int64_t r = row0; r < row1; r++) {
        const uint8_t *q = blocks + r * nb * BLOCK_BYTES;
        const uint8_t *s = scales + r * nb;
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + 2 <= pairs; p += 2) {
            prefetch_ahead(q + p * 2 * BLOCK_BYTES); /* one 64-byte line a step */
            t0 = pair_q8(q + p * 2 * BLOCK_BYTES, xq + p * 64, lut, pair_scale_q8(s + 2 * p, xd + 2 * p), t0);
            t1 = pair_q8(q + (p + 1) * 2 * BLOCK_BYTES, xq + (p + 1) * 64, lut,
                         pair_scale_q8(s + 2 * p + 2, xd + 2 * p + 2), t1);
        }
        for (; p < pairs; p++)
            t0 = pair_q8(q + p * 2 * BLOCK_BYTES, xq + p * 64, lut, pair_scale_q8(s + 2 * p, xd + 2 * p), t0);
        float total = hsum256(_mm256_add_ps(t0, t1));
        if (nb % 2) {
            int64_t b = nb - 1;
            total += (float)block_sum_q8(q + b * BLOCK_BYTES, xq, b, nb) * (HALF_SCALE[s[b]] * xd[b]);
        }
        acc[r] = total;
    }
}

/* MXFP4 rows on AVX-512 (F, BW), float32 activations. Four blocks a step: their 64 code bytes are one load, as
 * sixteen 32-bit words of 8 codes each; word i belongs to block i / 4. vpermps takes the low 4 bits of each word
 * as an index into a 16-entry float32 table of the E2M1 values, so eight lookups, on the word shifted by 4k for
 * code k, give the 128 weights as float32 (exact) with no masking, and eight FMAs take them against the
 * activations put in that order (octet_order). Lane i of the sum belongs to block i / 4 alone, so one multiply by
 * [s0 x4, s1 x4, s2 x4, s3 x4] scales a step; that vector is the four scale bytes broadcast, each picked into
 * its four lanes by one vpshufb and shifted into the float exponent (2**(s - 127): exact). The E8M0 bytes that
 * shift does not give (0: 2**-127, a float32 subnormal; 0xFF: NaN) are looked for once a row, and a row holding
 * one fixes them up every step. The last cols / 32 % 4 blocks go through the same step with masked loads.
 * Measured on the Intel Xeon VM (2026-12-03), one thread, a 512-row 20b gate_up in L2: 20.0 cycles a step (at a
 * nominal 4.05 GHz) against 24.8 for the AVX2 loop and 22.0 for the AVX512-BF16 one; from memory, the one-token
 * MoE over 24 layers' 20b experts on 2 threads, float32 activations 14.9 -> 15.5 GB/s against the AVX2 loop, but
 * bf16 activations (widened) 15.3 against 16.3 through the AVX512-BF16 loop, which keeps them where the CPU has it. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512 group_sum(__m512i words, const float *x,
                                                                                        int64_t stride,
                                                                                        __mmask16 lanes,
                                                                                        __m512 table) {
    __m512 a = _mm512_mul_ps(_mm512_permutexvar_ps(words, table), _mm512_maskz_loadu_ps(lanes, x));
    __m512 b = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(words, 4), table),
                             _mm512_maskz_loadu_ps(lanes, x + stride));
    for (int k = 2; k < 8; k += 2) {
        a = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(words, 4 * k), table),
                            _mm512_maskz_loadu_ps(lanes, x + k * stride), a);
        b = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(words, 4 * k + 4), table),
                            _mm512_maskz_loadu_ps(lanes, x + (k + 1) * stride), b);
    }
    return _mm512_add_ps(a, b);
}

/* [s0 x4, s1 x4, s2 x4, s3 x4] as floats from the four scale bytes in `four`; `special`: the row holds 0 or 0xFF */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512 group_scale(int32_t four, int special) {
    const __m512i pick = _mm512_set_epi8(-1, -1, -1, 3, -1, -1, -1, 3, -1, -1, -1, 3, -1, -1, -1, 3, /* lanes 12-15 */
                                         -1, -1, -1, 2, -1, -1, -1, 2, -1, -1, -1, 2, -1, -1, -1, 2,
                                         -1, -1, -1, 1, -1, -1, -1, 1, -1, -1, -1, 1, -1, -1, -1, 1,
                                         -1, -1, -1, 0, -1, -1, -1, 0, -1, -1, -1, 0, -1, -1, -1, 0);
    __m512i exponent = _mm512_shuffle_epi8(_mm512_set1_epi32(four), pick);
    __m512i bits = _mm512_slli_epi32(exponent, 23);
    if (special) {
        bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(exponent, _mm512_setzero_si512()),
                                     _mm512_set1_epi32(0x00400000));
        bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(exponent, _mm512_set1_epi32(255)),
                                     _mm512_set1_epi32(0x7FC00000));
    }
    return _mm512_castsi512_ps(bits);
}

/* whether the n scale bytes at s hold 0 or 0xFF */
__attribute__((target("avx512f,avx512bw"))) static int special_scales(const uint8_t *s, int64_t n) {
    __mmask64 found = 0;
    for (int64_t i = 0; i < n; i += 64) {
        __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (n - i)) - 1);
        __m512i v = _mm512_maskz_loadu_epi8(m, s + i);
        found |= _mm512_mask_cmpeq_epi8_mask(m, v, _mm512_setzero_si512()) |
                 _mm512_mask_cmpeq_epi8_mask(m, v, _mm512_set1_epi8((char)0xFF));
    }
    return found != 0;
}

__attribute__((target("avx512f,avx512bw"))) static void mxfp4_rows_avx512(const uint8_t *blocks, const uint8_t *scales,
                                                                          int64_t cols, const float *xs,
                                                                          int64_t tokens, int64_t row0, int64_t row1,
                                                                          float *acc, int64_t rows) {
    int64_t nb = cols / BLOCK, groups = nb / 4, rest = nb % 4; /* rest: blocks after the last whole group */
    float values[16];
    for (int i = 0; i < 16; i++) values[i] = 0.5f * (float)TWICE_E2M1[i];
    const __m512 table = _mm512_loadu_ps(values);
    const __mmask16 all = 0xFFFF, rest_lanes = (__mmask16)((1u << (4 * rest)) - 1);
    for (int64_t r = row0; r < row1; r++) {
        const uint8_t *q = blocks + r * nb * BLOCK_BYTES;
        const uint8_t *s = scales + r * nb;
        int special = special_scales(s, nb);
        __m512 total[MAX_TOKENS];
        for (int64_t t = 0; t < tokens; t++) total[t] = _mm512_setzero_ps();
        int64_t g = 0;
        if (tokens == 1) { /* decoding: two groups a step, two running totals */
            __m512 other = _mm512_setzero_ps();
            for (; g + 2 <= groups; g += 2) {
                prefetch_ahead(q + g * 64);
                prefetch_ahead(q + g * 64 + 64);
                int32_t four[2];
                memcpy(four, s + 4 * g, 8);
                __m512 sum0 = group_sum(_mm512_loadu_si512(q + g * 64), xs + g * 128, 16, all, table);
                __m512 sum1 = group_sum(_mm512_loadu_si512(q + g * 64 + 64), xs + g * 128 + 128, 16, all, table);
                total[0] = _mm512_fmadd_ps(sum0, group_scale(four[0], special), total[0]);
                other = _mm512_fmadd_ps(sum1, group_scale(four[1], special), other);
            }
            total[0] = _mm512_add_ps(total[0], other);
        }
        for (; g < groups; g++) {
            prefetch_ahead(q + g * 64);
            int32_t four;
            memcpy(&four, s + 4 * g, 4);
            __m512i words = _mm512_loadu_si512(q + g * 64);
            __m512 scale = group_scale(four, special);
            for (int64_t t = 0; t < tokens; t++)
                total[t] = _mm512_fmadd_ps(group_sum(words, xs + t * cols + g * 128, 16, all, table), scale, total[t]);
        }
        if (rest) { /* lanes past the blocks load zeros (weights and activations) and a scale of 1 */
            int32_t four = 0x7F7F7F7F;
            memcpy(&four, s + 4 * groups, rest);
            __m512i words = _mm512_maskz_loadu_epi32(rest_lanes, q + groups * 64);
            __m512 scale = group_scale(four, special);
            for (int64_t t = 0; t < tokens; t++)
                total[t] = _mm512_fmadd_ps(group_sum(words, xs + t * cols + groups * 128, 4 * rest, rest_lanes, table),
                                           scale, total[t]);
        }
        for (int64_t t = 0; t < tokens; t++) acc[t * rows + r] = _mm512_reduce_add_ps(total[t]);
    }
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
    uint16_t bf16[16], words[32];
    e2m1_bf16(bf16);
    for (int i = 0; i < 16; i++) {
        low_bytes[i] = (uint8_t)bf16[i];
        high_bytes[i] = (uint8_t)(bf16[i] >> 8);
        words[i] = words[i + 16] = bf16[i];
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
            prefetch_ahead(q + g * GROUP * BLOCK_BYTES); /* one 64-byte line a step */
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
            for (int64_t t = 0; t < tokens; t++) { /* two chains of two: half the dot products' latency a step */
                const uint16_t *x = xs + t * cols + g * GROUP * BLOCK;
                __m512 even = _mm512_dpbf16_ps(_mm512_setzero_ps(), w0, (__m512bh)_mm512_loadu_si512(x));
                __m512 odd = _mm512_dpbf16_ps(_mm512_setzero_ps(), w2, (__m512bh)_mm512_loadu_si512(x + 64));
                even = _mm512_dpbf16_ps(even, w1, (__m512bh)_mm512_loadu_si512(x + 32));
                odd = _mm512_dpbf16_ps(odd, w3, (__m512bh)_mm512_loadu_si512(x + 96));
                total[t] = _mm512_fmadd_ps(_mm512_add_ps(even, odd), scale, total[t]);
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

/* bf16 weights times two or more rows of bf16 activations on CPUs with AVX512-BF16: one vdpbf16ps per 32 weights
 * a token (products exact in float32, summed in pairs; denormal inputs count as zero there), two accumulators a
 * token, the row's last cols % 32 through a masked load (zeros past the end add nothing). One row (decoding) is
 * not taken here: mxg_bf16_bf16x says why. */
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
                prefetch_ahead(row + k);
                prefetch_ahead(row + k + 32);
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

/* ---- many tokens: a register-blocked GEMM on decoded panels (AVX2 + FMA) ------------------------------------
 * Prefill gives a routed expert tens to hundreds of tokens, and the unembedding every position: there the products
 * are compute-bound, and the row-at-a-time loops above (one decoded block shared by at most MAX_TOKENS tokens,
 * horizontal sums, a scale multiply a block) reach a third of the FMA rate. Here GEMM_ROWS weight rows are
 * decoded (MXFP4, scaled: exact float32 values) or widened (bf16) into a float32 panel, a k-block at a time, the
 * activations are packed once a call as [K][16]-token tiles, and a 6 x 16 block of outputs lives in twelve
 * accumulators while k runs: per k, two tile loads and six broadcast weights feed twelve FMAs. Each output is one
 * float32 sum over k in order (FMA: each exact product rounded into the sum), so the bound of the products above
 * holds, and the result does not depend on how rows are split over threads. */
#define GEMM_ROWS 6
#define GEMM_TILE 16
/* Tokens a pass over the rows takes: their packed tiles (64 x 20b's 2880 floats: 737 KB) stay in L2 while every
 * row panel runs against them, where all of a 512-token prompt's (5.9 MB) came from L3 for each panel. Each pass
 * decodes the rows again (about a tenth of a 64-token pass's time on the Intel VM). Measured on the Intel Xeon VM
 * (2026-12-03, 2 threads, a 20b gate_up against 512 tokens): 142 -> 204 GFLOP/s capped at AVX2, 163 -> 274 at
 * AVX-512 (with twelve rows a step; 128 tokens a pass gave 202 and 281, all at once 239). gemm_token_block
 * chooses GEMM_TOKEN_BLOCK_MAX where it pays: see there. */
#define GEMM_TOKEN_BLOCK 64
#define GEMM_TOKEN_BLOCK_MAX 128
/* k runs in blocks of GEMM_KC: the rows' values for one block are decoded into a panel of 2 * GEMM_ROWS rows x
 * GEMM_KC (12 KB: in L1) just before every tile of the pass runs over that block, each tile's sums carried from
 * block to block in memory (c: stored and reloaded exactly, so each output is still one float32 sum over k in
 * order). Every panel row is then a constant offset from one pointer, which keeps the twelve-row kernel's
 * broadcasts within the registers: with a pointer a row it moved pointers between vector and integer registers
 * every k, on the FMA ports. Measured on the Intel Xeon VM (2026-12-03, 2 threads, AVX-512; A/B in one process):
 * a 20b gate_up x 512 tokens 272 -> 340 GFLOP/s, x 64 tokens with a new expert each call 272 -> 344, the bf16
 * unembedding x 128 tokens 245 -> 296; capped at AVX2 +4-8%; float32 weights (copied into the panel, where the
 * old loop read them in place) +3% at AVX-512, -7% capped at AVX2. KC 128 was slower, 512 no faster. */
#define GEMM_PANEL_ROWS (2 * GEMM_ROWS)
#define GEMM_KC 256
#define GEMM_TILES (GEMM_TOKEN_BLOCK_MAX / GEMM_TILE) /* tiles of one pass, at most */
/* The kernels read a tile's 64-byte line a k from L2 and ask for the line GEMM_TILE_AHEAD k ahead into L1 (the
 * hardware's L1 prefetcher left them waiting): on the Intel VM (2026-12-03, 2 threads, A/B in one process) a 20b
 * gate_up x 512 tokens 339 -> 371 GFLOP/s at AVX-512, 217 -> 231 capped at AVX2; 4 and 32 k ahead no better. */
#define GEMM_TILE_AHEAD 8
static int use_avx512(void);

/* c[i][j] += sum_{k < n} panel[i][k] * tile[k][j] for i < mr (panel rows GEMM_KC apart), j < width (8 or 16
 * tokens); c starts from zero where `first`. always_inline: each call site passes constants, so each (mr, width)
 * gets its own loop. */
__attribute__((target("avx2,fma"), always_inline)) static inline void gemm_block(const float *panel, int64_t n,
                                                                                const float *tile, int width, int mr,
                                                                                float *c, int first) {
    __m256 acc[GEMM_ROWS][2];
    for (int i = 0; i < mr; i++) {
        acc[i][0] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * GEMM_TILE);
        acc[i][1] = first || width != 16 ? _mm256_setzero_ps() : _mm256_loadu_ps(c + i * GEMM_TILE + 8);
    }
    for (int64_t k = 0; k < n; k++) {
        __m256 b0 = _mm256_loadu_ps(tile + k * width);
        __m256 b1 = width == 16 ? _mm256_loadu_ps(tile + k * width + 8) : b0;
        for (int i = 0; i < mr; i++) {
            __m256 a = _mm256_broadcast_ss(panel + i * GEMM_KC + k);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            if (width == 16) acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < mr; i++) {
        _mm256_storeu_ps(c + i * GEMM_TILE, acc[i][0]);
        if (width == 16) _mm256_storeu_ps(c + i * GEMM_TILE + 8, acc[i][1]);
    }
}

/* gemm_block for 6 rows and 16 tokens (nearly every call) with its twelve accumulators named: given as an array,
 * GCC stored each of them to the stack every k (measured: 42 GFLOP/s instead of the FMA rate). */
#define GEMM_ROW_STEP(i)                                                                                           \
    a = _mm256_broadcast_ss(panel + (i) * GEMM_KC + k);                                                            \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0);                                                                     \
    c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);
#define GEMM_LOAD_256(i)                                                                                           \
    __m256 c##i##0 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + (i) * GEMM_TILE),                           \
           c##i##1 = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + (i) * GEMM_TILE + 8);

__attribute__((target("avx2,fma"))) static void gemm_6x16(const float *panel, int64_t n, const float *tile, float *c,
                                                           int first) {
    GEMM_LOAD_256(0) GEMM_LOAD_256(1) GEMM_LOAD_256(2) GEMM_LOAD_256(3) GEMM_LOAD_256(4) GEMM_LOAD_256(5)
    for (int64_t k = 0; k < n; k++) {
        __m256 b0 = _mm256_loadu_ps(tile + k * 16), b1 = _mm256_loadu_ps(tile + k * 16 + 8), a;
        _mm_prefetch((const char *)(tile + (k + GEMM_TILE_AHEAD) * 16), _MM_HINT_T0);
        GEMM_ROW_STEP(0)
        GEMM_ROW_STEP(1)
        GEMM_ROW_STEP(2)
        GEMM_ROW_STEP(3)
        GEMM_ROW_STEP(4)
        GEMM_ROW_STEP(5)
    }
    __m256 all[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
    for (int i = 0; i < 12; i++) _mm256_storeu_ps(c + i * 8, all[i]);
}

/* gemm_6x16 for twelve rows and two tiles at once with AVX-512 (the AVX-512 levels): per k, each tile's
 * 16 tokens are one 512-bit load and twelve broadcast weights feed 24 16-wide FMAs (24 of the 32 registers
 * accumulate). The tiles (2 x 64 bytes a k) come from L2, not L1: with six rows a step each load fed six FMAs and
 * that stream, not the FMAs, set the pace. Each output is the same float32 sum over k in the same order as
 * gemm_6x16's, so the results are bit for bit those of the AVX2 loop (a test holds them so). Panels of fewer
 * rows take the AVX2 loop. */
#define GEMM_ROW_STEP_512_12(i)                                                                                    \
    a = _mm512_set1_ps(panel[(i) * GEMM_KC + k]);                                                                  \
    c##i##0 = _mm512_fmadd_ps(a, b0, c##i##0);                                                                     \
    c##i##1 = _mm512_fmadd_ps(a, b1, c##i##1);
#define GEMM_LOAD_512(i)                                                                                           \
    __m512 c##i##0 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + (i) * GEMM_TILE),                           \
           c##i##1 = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c_next + (i) * GEMM_TILE);

__attribute__((target("avx512f"))) static void gemm_12x32_avx512(const float *panel, int64_t n, const float *tile0,
                                                                  const float *tile1, float *c, float *c_next,
                                                                  int first) {
    GEMM_LOAD_512(0) GEMM_LOAD_512(1) GEMM_LOAD_512(2) GEMM_LOAD_512(3) GEMM_LOAD_512(4) GEMM_LOAD_512(5)
    GEMM_LOAD_512(6) GEMM_LOAD_512(7) GEMM_LOAD_512(8) GEMM_LOAD_512(9) GEMM_LOAD_512(10) GEMM_LOAD_512(11)
    for (int64_t k = 0; k < n; k++) {
        __m512 b0 = _mm512_loadu_ps(tile0 + k * 16), b1 = _mm512_loadu_ps(tile1 + k * 16), a;
        _mm_prefetch((const char *)(tile0 + (k + GEMM_TILE_AHEAD) * 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(tile1 + (k + GEMM_TILE_AHEAD) * 16), _MM_HINT_T0);
        GEMM_ROW_STEP_512_12(0)
        GEMM_ROW_STEP_512_12(1)
        GEMM_ROW_STEP_512_12(2)
        GEMM_ROW_STEP_512_12(3)
        GEMM_ROW_STEP_512_12(4)
        GEMM_ROW_STEP_512_12(5)
        GEMM_ROW_STEP_512_12(6)
        GEMM_ROW_STEP_512_12(7)
        GEMM_ROW_STEP_512_12(8)
        GEMM_ROW_STEP_512_12(9)
        GEMM_ROW_STEP_512_12(10)
        GEMM_ROW_STEP_512_12(11)
    }
    __m512 first_tile[12] = {c00, c10, c20, c30, c40, c50, c60, c70, c80, c90, c100, c110};
    __m512 second_tile[12] = {c01, c11, c21, c31, c41, c51, c61, c71, c81, c91, c101, c111};
    for (int i = 0; i < 12; i++) {
        _mm512_storeu_ps(c + i * GEMM_TILE, first_tile[i]);
        _mm512_storeu_ps(c_next + i * GEMM_TILE, second_tile[i]);
    }
}

/* The width of the tile starting `left` tokens before the end: 16, or 8 where at most 8 remain in the AVX2 loops.
 * At AVX-512 every tile is 16 wide (zeros past the end): a 16-wide FMA costs what an 8-wide one does there, and
 * the last tile then takes the twelve-row kernels. */
static inline int tile_width(int64_t left, int wide) { return wide || left > 8 ? 16 : 8; }

/* gemm_12x32_avx512 for a lone 16-token tile (an odd tile count): twelve accumulators, per k one tile load and
 * twelve broadcasts. A routed expert's group of 9-24 tokens (a 120b prompt of 512 tokens gives each of its 128
 * experts 16 on average) and every last tile had run on the AVX2 loop. With the last tile 16 wide at AVX-512
 * (tile_width), a 20b gate_up, a new expert each call, on the Intel VM's two cores (2026-12-03, GFLOP/s of the
 * real tokens): x 16 tokens 188 -> 247, x 24 184 -> 246, x 40 272 -> 293, x 56 251 -> 330. */
__attribute__((target("avx512f"))) static void gemm_12x16_avx512(const float *panel, int64_t n, const float *tile,
                                                                  float *c, int first) {
    __m512 acc[GEMM_PANEL_ROWS];
    for (int i = 0; i < GEMM_PANEL_ROWS; i++)
        acc[i] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + i * GEMM_TILE);
    for (int64_t k = 0; k < n; k++) {
        __m512 b = _mm512_loadu_ps(tile + k * 16);
        _mm_prefetch((const char *)(tile + (k + GEMM_TILE_AHEAD) * 16), _MM_HINT_T0);
        for (int i = 0; i < GEMM_PANEL_ROWS; i++)
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(panel[i * GEMM_KC + k]), b, acc[i]);
    }
    for (int i = 0; i < GEMM_PANEL_ROWS; i++) _mm512_storeu_ps(c + i * GEMM_TILE, acc[i]);
}

#define GEMM_CASE(MR)                                                                                              \
    case MR:                                                                                                       \
        if (width == 16)                                                                                           \
            gemm_block(panel, n, tile, 16, MR, c, first);                                                          \
        else                                                                                                       \
            gemm_block(panel, n, tile, 8, MR, c, first);                                                           \
        break;

__attribute__((target("avx2,fma"))) static void gemm_dispatch(const float *panel, int64_t n, const float *tile,
                                                               int width, int mr, float *c, int first) {
    if (mr == 6 && width == 16) return gemm_6x16(panel, n, tile, c, first);
    switch (mr) {
        GEMM_CASE(1)
        GEMM_CASE(2)
        GEMM_CASE(3)
        GEMM_CASE(4)
        GEMM_CASE(5)
        GEMM_CASE(6)
    }
}

/* `count` MXFP4 blocks (codes q, scales s) decoded and scaled into float32 at out, each block in split order (its
 * 16 even elements, then the 16 odd ones), which the packed activations follow. */
__attribute__((target("avx2,fma"))) static void decode_split(const uint8_t *q, const uint8_t *s, int64_t count,
                                                              float *out) {
    for (int64_t b = 0; b < count; b++) {
        __m256 v[4], scale = _mm256_set1_ps(HALF_SCALE[s[b]]);
        block_twice_e2m1(q + b * BLOCK_BYTES, v);
        for (int j = 0; j < 4; j++) _mm256_storeu_ps(out + b * BLOCK + 8 * j, _mm256_mul_ps(v[j], scale));
    }
}

/* n bf16 weights widened into float32 at out. */
__attribute__((target("avx2,fma"))) static void widen(const uint16_t *w, int64_t n, float *out) {
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(w + k));
        _mm256_storeu_ps(out + k, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
    for (; k < n; k++) out[k] = bf16_to_f32(w[k]);
}

/* Tiles [j, j + count) of a pass (count 1, or 2 at AVX-512) against one panel of mr rows over one k-block of n
 * from k0: their sums c[j..] (per tile GEMM_PANEL_ROWS x GEMM_TILE) carried on. */
__attribute__((target("avx2,fma"))) static void panel_tiles(const float *panel, int mr, int64_t n, const float *packed,
                                                             int64_t cols, int64_t k0, int64_t tokens, int64_t j,
                                                             int64_t count, int wide,
                                                             float (*c)[GEMM_PANEL_ROWS * GEMM_TILE], int first) {
    for (int64_t end = j + count; j < end; j++) {
        const float *tile = packed + j * GEMM_TILE * cols; /* [cols][width] */
        int width = tile_width(tokens - j * GEMM_TILE, wide);
        if (wide && mr == GEMM_PANEL_ROWS && j + 1 < end) { /* this tile and the next, both 16 wide */
            gemm_12x32_avx512(panel, n, tile + k0 * 16, tile + GEMM_TILE * cols + k0 * 16, c[j], c[j + 1], first);
            j++;
            continue;
        }
        if (wide && mr == GEMM_PANEL_ROWS && width == 16) {
            gemm_12x16_avx512(panel, n, tile + k0 * 16, c[j], first);
            continue;
        }
        for (int i0 = 0; i0 < mr; i0 += GEMM_ROWS) /* twelve rows: two blocks of six */
            gemm_dispatch(panel + i0 * GEMM_KC, n, tile + k0 * width, width, mr - i0 < GEMM_ROWS ? mr - i0 : GEMM_ROWS,
                          c[j] + i0 * GEMM_TILE, first);
    }
}

/* Rows [row0, row1) of y [tokens, rows] (tokens <= GEMM_TOKEN_BLOCK_MAX) for weights of `kind` (0 MXFP4, 1 bf16, 2
 * float32) against the packed activations. The rows go in groups of panels and k in blocks: a group's rows are
 * decoded for one k-block into its panels, then each tile's slice of the k-block (16 tokens x GEMM_KC floats, 16 KB:
 * in L1) runs against every panel of the group before the next tile, the group's sums (c) kept between k-blocks. At
 * AVX2, dense weights past GEMM_GROUP_MIN_TILES tiles go GEMM_GROUP_PANELS panels (48 rows) a group: the kernels
 * then read a tile's line a k from L1 and the panels from L2, where panel by panel over all of k they read every
 * tile from L2 or beyond (a pass's tiles are 1.47 MB at 20b's width x 128 tokens), and each group asks for its rows'
 * next k-block slice into L2 as it runs. MXFP4 rows go a panel a group (grouped, a 20b gate_up x 8-48 tokens, a new
 * expert each call, ran 4-20% slower; x 512 2-3% faster), and so does everything at AVX-512 (2 MB of L2 there holds
 * a pass's tiles; grouping is not measured there). The outputs go to y a token at a time (y is [tokens, rows]: a
 * group's outputs of one token are consecutive there). Measured on the AVX2-only Zen 3 (2026-12-03, A/B in one
 * process, medians of 9): x 512 tokens, a bf16 16384 x 2880 +9 to +13%, float32 4096 x 2880 +8 to +9% on 2 threads
 * (to 140-170 GFLOP/s of 199) and on one; x 16-128 tokens +0 to +20%. Each output is one float32 sum over k in
 * order, whatever the grouping: the results are bit for bit those of panel-by-panel order. */
#define GEMM_GROUP_PANELS 8
#define GEMM_GROUP_MIN_TILES 2
__attribute__((target("avx2,fma"))) static void gemm_rows_avx2(int kind, const uint8_t *blocks, const uint8_t *scales,
                                                                const void *dense, int64_t cols, const float *packed,
                                                                int64_t tokens, int64_t row0, int64_t row1, float *y,
                                                                int64_t rows) {
    typedef float Panel[GEMM_PANEL_ROWS * GEMM_KC];
    typedef float Sums[GEMM_TILES][GEMM_PANEL_ROWS * GEMM_TILE]; /* each tile's sums so far, a panel */
    Panel one_panel;
    Sums one_sums;
    int64_t nb = cols / BLOCK, tiles = (tokens + GEMM_TILE - 1) / GEMM_TILE;
    int wide = use_avx512(); /* AVX-512: two tiles at once, twelve rows where there are twelve */
    const char *weights = kind == 0 ? (const char *)blocks : (const char *)dense;
    int64_t element_bits = kind == 0 ? 4 : kind == 1 ? 16 : 32;
    int64_t row_bytes = cols * element_bits / 8, slice_bytes = GEMM_KC * element_bits / 8;
    int group_panels = !wide && kind != 0 && tiles > GEMM_GROUP_MIN_TILES ? GEMM_GROUP_PANELS : 1;
    int64_t k_blocks = (cols + GEMM_KC - 1) / GEMM_KC;
    /* a group's panels and sums (147 KB) on the heap: a thread's stack may be 128 KB (musl's default); one panel
     * and its sums (18 KB) on the stack, where a group of one is all the heap could give */
    void *group_memory = group_panels > 1 ? malloc(GEMM_GROUP_PANELS * (sizeof(Panel) + sizeof(Sums))) : NULL;
    if (group_memory == NULL) group_panels = 1;
    Panel *panels_of_group = group_memory ? (Panel *)group_memory : &one_panel;
    Sums *c = group_memory ? (Sums *)((char *)group_memory + GEMM_GROUP_PANELS * sizeof(Panel)) : &one_sums;
    for (int64_t g0 = row0; g0 < row1;) {
        int64_t start[GEMM_GROUP_PANELS], g1 = g0;
        int size[GEMM_GROUP_PANELS], panels = 0;
        while (panels < group_panels && g1 < row1) {
            int step = wide && row1 - g1 >= GEMM_PANEL_ROWS ? GEMM_PANEL_ROWS : GEMM_ROWS;
            size[panels] = row1 - g1 < step ? (int)(row1 - g1) : step;
            start[panels] = g1;
            g1 += size[panels++];
        }
        /* MXFP4 (a panel a group): the next GEMM_PANEL_ROWS rows (contiguous) into L2, a share each k-block: a
         * k-block is 128 bytes of each row, too little at once for the hardware's prefetcher to run ahead (20b
         * gate_up x 64 tokens, a new expert each call, Intel VM: 297 -> 344 GFLOP/s on 2 threads) */
        int64_t ahead_end = kind == 0 ? (row1 - g1 < GEMM_PANEL_ROWS ? row1 - g1 : GEMM_PANEL_ROWS) * row_bytes : 0;
        int64_t ahead_step = (ahead_end + k_blocks - 1) / k_blocks;
        for (int64_t k0 = 0; k0 < cols; k0 += GEMM_KC) {
            int64_t n = cols - k0 < GEMM_KC ? cols - k0 : GEMM_KC;
            /* bf16 and float32: the slice asked for is the next k-block's of this group, or the first of the
             * next group's rows */
            int64_t next_k = k0 + GEMM_KC < cols ? k0 + GEMM_KC : 0, shift = next_k ? 0 : g1 - g0;
            int64_t next_end = kind == 0 ? 0 : next_k ? g1 : row1;
            for (int64_t o = k0 / GEMM_KC * ahead_step; o < ahead_end && o < (k0 / GEMM_KC + 1) * ahead_step; o += 64)
                _mm_prefetch(weights + g1 * row_bytes + o, _MM_HINT_T1);
            for (int p = 0; p < panels; p++)
                for (int i = 0; i < size[p]; i++) {
                    int64_t r = start[p] + i;
                    float *row = panels_of_group[p] + i * GEMM_KC;
                    if (kind == 0) /* KC and cols are whole blocks */
                        decode_split(blocks + (r * nb + k0 / BLOCK) * BLOCK_BYTES, scales + r * nb + k0 / BLOCK,
                                     n / BLOCK, row);
                    else if (kind == 1)
                        widen((const uint16_t *)dense + r * cols + k0, n, row);
                    else
                        memcpy(row, (const float *)dense + r * cols + k0, sizeof(float) * n);
                    if (r + shift < next_end) {
                        const char *from = weights + (r + shift) * row_bytes + next_k * element_bits / 8;
                        for (int64_t o = 0; o < slice_bytes; o += 64) _mm_prefetch(from + o, _MM_HINT_T1);
                    }
                }
            int64_t tiles_a_step = wide ? 2 : 1;
            for (int64_t j = 0; j < tiles; j += tiles_a_step)
                for (int p = 0; p < panels; p++)
                    panel_tiles(panels_of_group[p], size[p], n, packed, cols, k0, tokens, j,
                                tiles - j < tiles_a_step ? tiles - j : tiles_a_step, wide, c[p], k0 == 0);
        }
        for (int64_t t = 0; t < tokens; t++)
            for (int p = 0; p < panels; p++)
                for (int i = 0; i < size[p]; i++)
                    y[t * rows + start[p] + i] = c[p][t / GEMM_TILE][i * GEMM_TILE + t % GEMM_TILE];
        g0 = g1;
    }
    free(group_memory);
}

/* ---- the panel GEMM with int8 activations (native-int8's prompts) -------------------------------------------- */
/* MXFP4 rows against many tokens' int8 activations (quantize_block's arithmetic, each token's blocks quantized
 * once a call), the integer products of vpmaddubsw: 32 multiplies a 256-bit instruction where an FMA makes 8.
 * Measured on the AMD EPYC Zen 3 (2026-12-03, one core, registers only): the kernel's step (6 rows x 16 tokens x
 * 4 k: 12 vpmaddubsw, 12 vpmaddwd, 12 adds) makes 33 multiply-adds a cycle where the float32 one makes 19.
 * vpmaddubsw multiplies unsigned bytes by signed ones, so the weights go as 2 E2M1 + 12 (0 to 24) and the
 * activations as their codes; each block's sum then holds 12 x the sum of its codes too, taken off before scaling
 * (a block's 32 products and that correction are exact integers, within 16 bits a pair: 2 x 24 x 127). Tiles of
 * 16 tokens are packed as [K / 4][16][4] bytes (a 32-bit lane: one token's 4 consecutive k, in split order within
 * each block as decode_split's panels), with a float32 scale and an int32 correction a (block, token); 128 tokens'
 * tiles at 20b's width are 368 KB, within a Zen 3 core's L2 where their float32 form (1.47 MB) is not. Each
 * output is sum_b fma(float(products_b - correction_b), 2**(s_b - 128) d_b, sum) over its blocks in order: the
 * result does not depend on how rows are split over threads. */
#define Q8_OFFSET 12
#define Q8_STEPS (BLOCK / 4) /* k steps of 4 a block */

/* `count` MXFP4 blocks as bytes 2 E2M1 + Q8_OFFSET (each block in split order) at out, their scales at half. */
__attribute__((target("avx2,fma"))) static void decode_q8_offset(const uint8_t *q, const uint8_t *s, int64_t count,
                                                                  uint8_t *out, float *half) {
    const __m128i lut = _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
    const __m128i low = _mm_set1_epi8(15);
    for (int64_t b = 0; b < count; b++) {
        __m128i codes = _mm_loadu_si128((const __m128i *)(q + b * BLOCK_BYTES));
        _mm_storeu_si128((__m128i *)(out + b * BLOCK), _mm_shuffle_epi8(lut, _mm_and_si128(codes, low)));
        _mm_storeu_si128((__m128i *)(out + b * BLOCK + 16),
                         _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(codes, 4), low)));
        half[b] = HALF_SCALE[s[b]];
    }
}

/* Two k steps of row i: each step's products of a 32-bit lane (4 pairs) within 16 bits pairwise (2 x 24 x 127),
 * the two steps' summed in 16 bits (4 x 24 x 127 < 2**15) before one vpmaddwd widens them: a third fewer
 * multiplies than a vpmaddwd a step (Zen 3, registers and L1 only: 1.3-2.1x the step rate). */
#define Q8_ROW_STEP(i)                                                                                             \
    w = _mm256_set1_epi32(*(const int32_t *)(panel + (i) * GEMM_KC + k * 4));                                     \
    v = _mm256_set1_epi32(*(const int32_t *)(panel + (i) * GEMM_KC + k * 4 + 4));                                 \
    s##i##0 = _mm256_add_epi32(                                                                                    \
        s##i##0, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w, _mm256_loadu_si256(at)),              \
                                                     _mm256_maddubs_epi16(v, _mm256_loadu_si256(at + 2))),         \
                                   ones));                                                                         \
    s##i##1 = _mm256_add_epi32(                                                                                    \
        s##i##1, _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w, _mm256_loadu_si256(at + 1)),          \
                                                     _mm256_maddubs_epi16(v, _mm256_loadu_si256(at + 3))),         \
                                   ones));
#define Q8_ZERO(i) __m256i s##i##0 = _mm256_setzero_si256(), s##i##1 = _mm256_setzero_si256();
#define Q8_SCALE(i)                                                                                                \
    w8 = _mm256_set1_ps(half[(i) * (GEMM_KC / BLOCK) + b]);                                                       \
    _mm256_storeu_ps(c + (i) * GEMM_TILE,                                                                          \
                     _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s##i##0, o0)), _mm256_mul_ps(w8, d0),      \
                                     first && b == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(c + (i) * GEMM_TILE)));  \
    _mm256_storeu_ps(c + (i) * GEMM_TILE + 8,                                                                      \
                     _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(s##i##1, o1)), _mm256_mul_ps(w8, d1),      \
                                     first && b == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(c + (i) * GEMM_TILE + 8)));

/* c[i][j] (6 rows x 16 tokens) += the k-block's `blocks` blocks of panel (6 rows GEMM_KC bytes apart, their
 * scales `half` GEMM_KC / BLOCK apart) against one tile (codes from this k-block on, scales and offsets from its
 * first block on); c starts from zero where `first`. Twelve int32 sums a block in registers, the float32 sums in
 * c (L1). */
__attribute__((target("avx2,fma"))) static void gemm_q8_6x16(const uint8_t *panel, const float *half, int64_t blocks,
                                                              const int8_t *tile, const float *scales,
                                                              const int32_t *offset, float *c, int first) {
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < blocks; b++) {
        Q8_ZERO(0) Q8_ZERO(1) Q8_ZERO(2) Q8_ZERO(3) Q8_ZERO(4) Q8_ZERO(5)
        for (int64_t k = b * Q8_STEPS; k < (b + 1) * Q8_STEPS; k += 2) {
            const __m256i *at = (const __m256i *)(tile + k * 64); /* steps k and k + 1, 16 tokens each */
            __m256i w, v;
            _mm_prefetch((const char *)(tile + (k + GEMM_TILE_AHEAD) * 64), _MM_HINT_T0);
            _mm_prefetch((const char *)(tile + (k + 1 + GEMM_TILE_AHEAD) * 64), _MM_HINT_T0);
            Q8_ROW_STEP(0)
            Q8_ROW_STEP(1)
            Q8_ROW_STEP(2)
            Q8_ROW_STEP(3)
            Q8_ROW_STEP(4)
            Q8_ROW_STEP(5)
        }
        __m256i o0 = _mm256_loadu_si256((const __m256i *)(offset + b * GEMM_TILE)),
                o1 = _mm256_loadu_si256((const __m256i *)(offset + b * GEMM_TILE + 8));
        __m256 d0 = _mm256_loadu_ps(scales + b * GEMM_TILE), d1 = _mm256_loadu_ps(scales + b * GEMM_TILE + 8), w8;
        Q8_SCALE(0) Q8_SCALE(1) Q8_SCALE(2) Q8_SCALE(3) Q8_SCALE(4) Q8_SCALE(5)
    }
}

/* gemm_rows_avx2 for MXFP4 rows against tiles packed by pack_q8 (tokens <= GEMM_TOKEN_BLOCK_MAX). A last panel
 * of fewer than six rows runs with the rest set to weight 0 and scale 0 (their sums are exactly 0), not stored. */
__attribute__((target("avx2,fma"))) static void gemm_rows_q8_avx2(const uint8_t *blocks, const uint8_t *scales,
                                                                   int64_t cols, PackedQ8 packed, int64_t tokens,
                                                                   int64_t row0, int64_t row1, float *y,
                                                                   int64_t rows) {
    uint8_t panel[GEMM_ROWS * GEMM_KC];
    float half[GEMM_ROWS * (GEMM_KC / BLOCK)];
    float c[GEMM_TILES][GEMM_ROWS * GEMM_TILE];
    int64_t nb = cols / BLOCK, tiles = (tokens + GEMM_TILE - 1) / GEMM_TILE;
    int64_t code_bytes = nb * BLOCK_BYTES, k_blocks = (cols + GEMM_KC - 1) / GEMM_KC;
    for (int64_t r0 = row0; r0 < row1; r0 += GEMM_ROWS) {
        int mr = row1 - r0 < GEMM_ROWS ? (int)(row1 - r0) : GEMM_ROWS;
        /* the next panel's codes into L2 a share each k-block, as gemm_rows_avx2 does */
        int64_t ahead_rows = row1 - r0 - mr < GEMM_ROWS ? row1 - r0 - mr : GEMM_ROWS;
        int64_t ahead_end = ahead_rows * code_bytes, ahead_step = (ahead_end + k_blocks - 1) / k_blocks;
        const char *ahead = (const char *)(blocks + (r0 + mr) * code_bytes);
        for (int64_t k0 = 0; k0 < cols; k0 += GEMM_KC) {
            int64_t n = cols - k0 < GEMM_KC ? cols - k0 : GEMM_KC, b0 = k0 / BLOCK;
            for (int64_t o = k0 / GEMM_KC * ahead_step; o < ahead_end && o < (k0 / GEMM_KC + 1) * ahead_step; o += 64)
                _mm_prefetch(ahead + o, _MM_HINT_T1);
            for (int i = 0; i < GEMM_ROWS; i++) {
                uint8_t *row = panel + i * GEMM_KC;
                float *row_half = half + i * (GEMM_KC / BLOCK);
                if (i < mr) {
                    decode_q8_offset(blocks + ((r0 + i) * nb + b0) * BLOCK_BYTES, scales + (r0 + i) * nb + b0,
                                     n / BLOCK, row, row_half);
                } else {
                    memset(row, Q8_OFFSET, (size_t)n);
                    for (int64_t b = 0; b < n / BLOCK; b++) row_half[b] = 0.0f;
                }
            }
            for (int64_t j = 0; j < tiles; j++)
                gemm_q8_6x16(panel, half, n / BLOCK, packed.codes + j * GEMM_TILE * cols + k0 * GEMM_TILE,
                             packed.scales + (j * nb + b0) * GEMM_TILE, packed.offset + (j * nb + b0) * GEMM_TILE,
                             c[j], k0 == 0);
        }
        for (int64_t j = 0; j < tiles; j++) {
            int64_t t0 = j * GEMM_TILE, count = tokens - t0 < GEMM_TILE ? tokens - t0 : GEMM_TILE;
            for (int i = 0; i < mr; i++)
                for (int64_t t = 0; t < count; t++) y[(t0 + t) * rows + r0 + i] = c[j][i * GEMM_TILE + t];
        }
    }
}

typedef struct {
    const float *x;
    int64_t tokens, cols;
    int8_t *codes;
    float *scales;
    int32_t *offset;
} PackQ8Task;

/* quantize_block of the 32 floats at xb with AVX2, the same bits (the same division, then vroundps to the nearest
 * integer, ties to even, as nearbyintf rounds): the codes in split order (16 even elements, then 16 odd) at q.
 * Returns d; *sum gets the codes' sum. The scalar loop took 7.7 ms to pack 512 tokens of 2880 (Zen 3), a tenth of
 * a 20b gate_up's int8 product against them. */
__attribute__((target("avx2,fma"))) static float quantize_block_split_avx2(const float *xb, int8_t q[BLOCK],
                                                                          int32_t *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f), largest = _mm256_set1_ps(3.40282347e38f);
    __m256 v[4], amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(xb + 8 * i);
        __m256 a = _mm256_andnot_ps(sign, v[i]);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, largest, _CMP_NLE_UQ)); /* an infinity or a NaN */
        amax = _mm256_max_ps(amax, a);
    }
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    int finite = _mm256_movemask_ps(bad) == 0;
    float d = finite ? _mm_cvtss_f32(m) / 127.0f : NAN;
    if (!finite || !(d > 0.0f)) {
        memset(q, 0, BLOCK);
        *sum = 0;
        return d;
    }
    __m256 divisor = _mm256_set1_ps(d);
    __m256i c[4], total = _mm256_setzero_si256();
    for (int i = 0; i < 4; i++) {
        c[i] = _mm256_cvtps_epi32(
            _mm256_round_ps(_mm256_div_ps(v[i], divisor), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        total = _mm256_add_epi32(total, c[i]);
    }
    /* packs interleave 128-bit lanes: [c0 0-3, c1 0-3, c2 0-3, c3 0-3 | c0 4-7, ...]; the permute restores the
     * elements' order, the byte shuffle puts each lane's even elements before its odd ones, the last permute
     * gathers the evens of both lanes ahead of the odds */
    __m256i bytes = _mm256_packs_epi16(_mm256_packs_epi32(c[0], c[1]), _mm256_packs_epi32(c[2], c[3]));
    bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    const __m256i evens_first = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8,
                                                 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    bytes = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(bytes, evens_first), 0xD8);
    _mm256_storeu_si256((__m256i *)q, bytes);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4E));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xB1));
    *sum = _mm_cvtsi128_si32(t);
    return d;
}

/* Tiles [begin, end) of PackedQ8 from float32 x [tokens, cols]: each (token, block) quantized (quantize_block),
 * tokens past the last as codes 0 and scale 0. */
__attribute__((target("avx2,fma"))) static void pack_q8(void *context, int64_t begin, int64_t end) {
    const PackQ8Task *p = (const PackQ8Task *)context;
    int64_t nb = p->cols / BLOCK;
    for (int64_t j = begin; j < end; j++) {
        int8_t *tile = p->codes + j * GEMM_TILE * p->cols;
        for (int t = 0; t < GEMM_TILE; t++) {
            int64_t token = j * GEMM_TILE + t;
            for (int64_t b = 0; b < nb; b++) {
                int8_t q[BLOCK] = {0};
                int32_t sum = 0;
                float d = 0.0f;
                if (token < p->tokens) d = quantize_block_split_avx2(p->x + token * p->cols + b * BLOCK, q, &sum);
                for (int i = 0; i < BLOCK; i += 4) /* split positions b * 32 + i .. + 3: one 32-bit lane */
                    memcpy(tile + (b * BLOCK + i) / 4 * 64 + t * 4, q + i, 4);
                p->scales[(j * nb + b) * GEMM_TILE + t] = d;
                p->offset[(j * nb + b) * GEMM_TILE + t] = Q8_OFFSET * sum;
            }
        }
    }
}

/* The clamped SwiGLU of eight (gate, up) pairs g (16 floats, interleaved) into o: gate = min(gate, limit) and up
 * clamped to +-limit (NaN kept), gate * sigmoid(alpha gate) * (up + 1), the sigmoid from exp(-|alpha gate|)
 * (cpu_exp.h: within 2 ulp; where alpha gate < -87.3 it gives 0 instead of a denormal, so an output below
 * ~1e-36 in magnitude becomes -0). */
__attribute__((target("avx2,fma"))) static inline void swiglu8(const float *g, float limit, float alpha, float *o) {
    __m256 a = _mm256_loadu_ps(g), b = _mm256_loadu_ps(g + 8);
    /* even elements (gates) and odd ones (ups), each in pair order */
    __m256 gate = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    __m256 up = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
    __m256 top = _mm256_set1_ps(limit);
    gate = _mm256_min_ps(top, gate); /* the second operand when it is NaN: NaN goes through */
    up = _mm256_max_ps(_mm256_set1_ps(-limit), _mm256_min_ps(top, up));
    __m256 z = _mm256_mul_ps(_mm256_set1_ps(alpha), gate);
    __m256 negative_abs = _mm256_or_ps(z, _mm256_set1_ps(-0.0f));
    __m256 e = exp_nonpositive(negative_abs);
    /* gate / (1 + exp(-z)) for z >= 0, gate exp(z) / (1 + exp(z)) below and for a NaN z (NaN either way) */
    __m256 non_negative = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GE_OQ);
    __m256 numerator = _mm256_blendv_ps(_mm256_mul_ps(gate, e), gate, non_negative);
    __m256 glu = _mm256_div_ps(numerator, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
    _mm256_storeu_ps(o, _mm256_mul_ps(glu, _mm256_add_ps(up, _mm256_set1_ps(1.0f))));
}

/* o[r / 2] for the pairs r in [row0, row1) (row0 even) of one token's y: eight pairs a step, the last few through
 * the same code on a padded copy, so a pair's output does not depend on where a thread's rows begin. */
__attribute__((target("avx2,fma"))) static void swiglu_avx2(const float *y, int64_t row0, int64_t row1, float limit,
                                                             float alpha, float *o) {
    int64_t r = row0;
    for (; r + 16 <= row1; r += 16) swiglu8(y + r, limit, alpha, o + r / 2);
    if (r < row1) {
        float in[16] = {0}, out[8];
        memcpy(in, y + r, sizeof(float) * (size_t)(row1 - r));
        swiglu8(in, limit, alpha, out);
        memcpy(o + r / 2, out, sizeof(float) * (size_t)((row1 - r) / 2));
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

/* The widest instruction set the kernels use, from the CPU running them (cpuid), not the build machine: 3
 * AVX512-BF16 (with AVX-512 F and BW), 2 AVX-512 F and BW, 1 AVX2 + FMA, 0 the portable loops. MXFP4_CPU_ISA
 * (read once) caps it: "avx512", "avx2" or "portable" (MXFP4_CPU_PORTABLE=1 too): how the tests reach every path
 * on one machine. */
static int isa_level(void) {
    static int known = -1;
    if (known >= 0) return known;
    int level = 0;
#if HAVE_AVX2_PATH
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) level = 1;
    if (level == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")) level = 2;
    if (level == 2 && __builtin_cpu_supports("avx512bf16")) level = 3;
#endif
    const char *cap = getenv("MXFP4_CPU_ISA"), *portable = getenv("MXFP4_CPU_PORTABLE");
    if ((cap != NULL && strcmp(cap, "portable") == 0) || (portable != NULL && portable[0] == '1')) level = 0;
    if (cap != NULL && strcmp(cap, "avx2") == 0 && level > 1) level = 1;
    if (cap != NULL && strcmp(cap, "avx512") == 0 && level > 2) level = 2;
    known = level;
    return known;
}

static int use_avx512bf16(void) { return isa_level() >= 3; }
static int use_avx512(void) { return isa_level() >= 2; }
static int use_avx2(void) { return isa_level() >= 1; }

/* The instruction set the products run with (isa_level), for reports. */
int mxg_isa(void) { return isa_level(); }

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
    int natural_order; /* bf16 on AVX2: x could not be reordered, so the portable loop takes it */
    int gemm;          /* many tokens: gemm_rows_avx2 on xs packed by pack_tiles */
    const int8_t *xq;  /* MXFP4, one token: int8 activations (quantize_q8) and their block scales, or NULL */
    const float *xd;
    PackedQ8 q8; /* MXFP4, many tokens: tiles of int8 activations (pack_q8) for gemm_rows_q8_avx2, or codes NULL */
} Task;

/* One token's float32 x [cols] quantized (quantize_q8) into scratch (cols floats: the cols int8 codes, then the
 * cols / 32 block scales), for t to read. */
static void quantize_into(const float *x, int64_t cols, float *scratch, Task *t) {
    int8_t *codes = (int8_t *)scratch;
    float *block_scales = scratch + cols / 4;
    quantize_q8(x, cols, codes, block_scales);
    t->xq = codes;
    t->xd = block_scales;
}

static void finish_rows(const Task *t) {
    for (int64_t k = 0; k < t->tokens; k++) {
        float *y = t->y + k * t->rows;
        if (t->bias)
            for (int64_t r = t->row0; r < t->row1; r++) y[r] += t->bias[r];
        if (!t->swiglu) continue;
        float *o = t->out + k * (t->rows / 2);
#if HAVE_AVX2_PATH
        if (use_avx2()) {
            swiglu_avx2(y, t->row0, t->row1, t->limit, t->alpha, o);
            continue;
        }
#endif
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
#if HAVE_AVX2_PATH
    if (t->gemm && t->q8.codes) {
        gemm_rows_q8_avx2(t->blocks, t->scales, t->cols, t->q8, t->tokens, t->row0, t->row1, t->y, t->rows);
        finish_rows(t);
        return NULL;
    }
    if (t->gemm) {
        const void *dense = t->kind == 1 ? (const void *)t->bf16 : (const void *)t->f32;
        gemm_rows_avx2(t->kind, t->blocks, t->scales, dense, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y,
                       t->rows);
        finish_rows(t);
        return NULL;
    }
#endif
    if (t->kind == 0 && t->xq) {
#if HAVE_AVX2_PATH
        if (use_avx2())
            mxfp4_rows_q8_avx2(t->blocks, t->scales, t->cols, t->xq, t->xd, t->row0, t->row1, t->y);
        else
#endif
            mxfp4_rows_q8_portable(t->blocks, t->scales, t->cols, t->xq, t->xd, t->row0, t->row1, t->y);
    } else if (t->kind == 0) {
        if (t->xs_bf16) {
#if HAVE_AVX2_PATH
            mxfp4_rows_avx512bf16(t->blocks, t->scales, t->cols, t->xs_bf16, t->tokens, t->row0, t->row1, t->y,
                                  t->rows);
#endif
        } else if (use_avx512()) {
#if HAVE_AVX2_PATH
            mxfp4_rows_avx512(t->blocks, t->scales, t->cols, t->xs, t->tokens, t->row0, t->row1, t->y, t->rows);
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
        } else if (use_avx2() && !t->natural_order) {
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

/* t (a panel GEMM call's task) narrowed to one pass: tokens [t0, t0 + n), their outputs. */
static inline Task gemm_pass(Task t, int64_t t0, int64_t n) {
    t.tokens = n;
    t.y += t0 * t.rows;
    if (t.out) t.out += t0 * (t.rows / 2);
    t.gemm = 1;
    return t;
}

/* float32 x [T, K] in the order the MXFP4 rows loop of this CPU's level reads */
static void rows_order(const float *x, int64_t tokens, int64_t cols, float *out) {
    if (use_avx512())
        octet_order(x, tokens, cols, out);
    else if (use_avx2())
        pair_order(x, tokens, cols, out);
    else
        split_even_odd(x, tokens, cols, out);
}

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for MXFP4 W (HF blocks [rows, cols/32, 16], scales
 * [rows, cols/32]); scratch: tokens * cols floats. With swiglu, out[t, r/2] = clamped SwiGLU of the pair. */
void mxg_mxfp4(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t cols, const float *x,
               int64_t tokens, const float *bias, float *y, float *scratch, int swiglu, float limit, float alpha,
               float *out, int threads) {
    pthread_once(&tables_once, build_tables);
    rows_order(x, tokens, cols, scratch);
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

/* Products of one shape for several weight matrices, one pool job for all (decoding's MoE: a layer's k experts'
 * gate_ups, then their downs), so the threads wait for each other once a batch instead of once a product. */
typedef struct {
    const Task *tasks;
    int64_t count, rows;
} TaskList;

static void run_list(void *context, int64_t begin, int64_t end) {
    const TaskList *list = (const TaskList *)context;
    for (int64_t c = begin / list->rows; c < list->count && c * list->rows < end; c++) {
        Task t = list->tasks[c];
        t.row0 = begin > c * list->rows ? begin - c * list->rows : 0;
        t.row1 = end < (c + 1) * list->rows ? end - c * list->rows : list->rows;
        run_task(&t);
    }
}

/* y[c] [rows] = W_c x[c] (+ bias[c]) (+ the SwiGLU into out[c]) for one token and c < k <= MXG_EACH_MAX, as k
 * calls of mxg_mxfp4 (bf16 x: of mxg_mxfp4_bf16x where the CPU has AVX512-BF16, else widened) would give them, bit
 * for bit; with int8_activations, as k calls of mxg_mxfp4_int8 would. scratch: 2 * k * cols floats. Returns 0
 * (nothing done) for k out of range. */
int mxg_mxfp4_each(int64_t k, const uint8_t *const *blocks, const uint8_t *const *scales, int64_t rows, int64_t cols,
                   const void *const *x, int is_bf16, const float *const *bias, float *const *y, float *scratch,
                   int swiglu, float limit, float alpha, float *const *out, int int8_activations, int threads) {
    if (k < 1 || k > MXG_EACH_MAX) return 0;
    pthread_once(&tables_once, build_tables);
    Task tasks[MXG_EACH_MAX];
    float *wide = scratch + k * cols;
    for (int64_t c = 0; c < k; c++) {
        Task t = {0, blocks[c], scales[c], NULL, NULL, rows, cols, 1, NULL, NULL, bias[c], y[c], swiglu, limit, alpha,
                  out ? out[c] : NULL, 0, rows};
        if (c > 0 && x[c] == x[c - 1]) { /* the same activations (a layer's gate_ups): ordered once */
            t.xs = tasks[c - 1].xs;
            t.xs_bf16 = tasks[c - 1].xs_bf16;
            t.xq = tasks[c - 1].xq;
            t.xd = tasks[c - 1].xd;
        } else if (is_bf16 && use_avx512bf16() && !int8_activations) {
#if HAVE_AVX2_PATH
            uint16_t *ordered = (uint16_t *)(scratch + c * cols);
            group_order((const uint16_t *)x[c], cols, ordered);
            t.xs_bf16 = ordered;
#endif
        } else {
            const float *xf = (const float *)x[c];
            if (is_bf16) {
                for (int64_t i = 0; i < cols; i++) wide[c * cols + i] = element(x[c], i, 1);
                xf = wide + c * cols;
            }
            if (int8_activations) {
                quantize_into(xf, cols, scratch + c * cols, &t);
            } else {
                rows_order(xf, 1, cols, scratch + c * cols);
                t.xs = scratch + c * cols;
            }
        }
        tasks[c] = t;
    }
    TaskList list = {tasks, k, rows};
    pool_run(run_list, &list, k * rows, 2, threads); /* even ranges: a SwiGLU pair never straddles two threads */
    return 1;
}

/* y [rows] = W x (+ bias) for one token's float32 x [cols] quantized to int8 (quantize_q8; x itself is left as it
 * is), with swiglu the clamped SwiGLU of the row pairs into out [rows / 2]: the products the one-token MoE takes
 * with int8 activations, for tests. scratch: cols floats. */
void mxg_mxfp4_int8(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t cols, const float *x,
                    const float *bias, float *y, float *scratch, int swiglu, float limit, float alpha, float *out,
                    int threads) {
    pthread_once(&tables_once, build_tables);
    Task t = {0, blocks, scales, NULL, NULL, rows, cols, 1, NULL, NULL, bias, y, swiglu, limit, alpha, out, 0, rows};
    quantize_into(x, cols, scratch, &t);
    run_split(&t, threads);
}

/* quantize_q8 of x [cols] into codes [cols] (q8_position's order) and block_scales [cols / 32], for tests. */
void mxg_quantize_int8(const float *x, int64_t cols, int8_t *codes, float *block_scales) {
    quantize_q8(x, cols, codes, block_scales);
}

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for bf16 W [rows, cols]. */
void mxg_bf16(const uint16_t *w, int64_t rows, int64_t cols, const float *x, int64_t tokens, const float *bias,
              float *y, int threads) {
    float *split = NULL;
    if (use_avx2()) { /* the activations in the order the AVX2 loop reads (split16); in place of x if no memory */
        split = malloc(sizeof(float) * tokens * cols);
        if (split != NULL) split16(x, 0, tokens, cols, split);
    }
    Task t = {1, NULL, NULL, w, NULL, rows, cols, tokens, split ? split : x, NULL, bias, y, 0, 0.0f, 0.0f, NULL, 0,
              rows};
    t.natural_order = split == NULL;
    run_split(&t, threads);
    free(split);
}

/* mxg_bf16 for bf16 activations x [T, K]. Returns 0 (nothing done) where the CPU lacks AVX512-BF16; the caller
 * then widens x to float32 and calls mxg_bf16. Two or more rows: vdpbf16ps on x as it is. One row (decoding): x
 * widened here into the order of the AVX2 loop, which runs it, as mxg_bf16 would on the widened row (the same exact
 * products as vdpbf16ps, summed in another order): inside a decode step that loop reads the weights faster, though
 * not in a loop of the product alone (Intel Xeon VM, 2026-12-03, the wide shape's bf16 decode step: the unembedding
 * 39.3-40.0 -> 36.2-37.2 ms, q 0.98-1.00 -> 0.91-0.95 ms, the step 68.5 -> 63.8 ms (24 layers: 191.0 -> 184.7),
 * medians alternated in one process; the unembedding called alone in a loop took 43.5 ms through vdpbf16ps against
 * 45.2 widened: the cause is not found). */
int mxg_bf16_bf16x(const uint16_t *w, int64_t rows, int64_t cols, const uint16_t *x, int64_t tokens, const float *bias,
                   float *y, int threads) {
    if (!use_avx512bf16()) return 0;
    float *split = NULL;
    if (tokens == 1) {
        split = malloc(sizeof(float) * cols);
        if (split == NULL) return 0;
        split16(x, 1, 1, cols, split);
    }
    Task t = {1, NULL, NULL, w, NULL, rows, cols, tokens, split, split ? NULL : x, bias, y, 0, 0.0f, 0.0f, NULL, 0,
              rows};
    run_split(&t, threads);
    free(split);
    return 1;
}

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for float32 W [rows, cols]. */
void mxg_f32(const float *w, int64_t rows, int64_t cols, const float *x, int64_t tokens, const float *bias, float *y,
             int threads) {
    Task t = {2, NULL, NULL, NULL, w, rows, cols, tokens, x, NULL, bias, y, 0, 0.0f, 0.0f, NULL, 0, rows};
    run_split(&t, threads);
}

#if HAVE_AVX2_PATH /* the panel GEMM's packing and pass size; its tiles and their widths are x86 code's */
/* x [T, K] as gemm_rows_avx2 reads it: tiles of 16 tokens (the last one 8 wide where at most 8 remain) as
 * [K][width], zero past the last token; each row's k in split order per block for MXFP4 weights (split), else
 * as it is. Tile j starts at 16 j K. Tiles [begin, end) of one call; the tiles are shared over the pool's threads
 * (a 512-token prompt's packing had been 2-4% of a 20b gate_up on one thread while the other waited). */
typedef struct {
    const float *x;
    int64_t tokens, cols;
    int split, wide;
    float *out;
} PackTask;

static void pack_tiles(void *context, int64_t begin, int64_t end) {
    const PackTask *p = (const PackTask *)context;
    for (int64_t t0 = begin * GEMM_TILE; t0 < end * GEMM_TILE && t0 < p->tokens; t0 += GEMM_TILE) {
        int width = tile_width(p->tokens - t0, p->wide);
        float *tile = p->out + t0 * p->cols;
        for (int j = 0; j < width; j++) {
            const float *src = p->x + (t0 + j) * p->cols;
            int present = t0 + j < p->tokens;
            for (int64_t k = 0; k < p->cols; k++) {
                int64_t from = k;
                if (p->split) {
                    int64_t b = k / BLOCK, i = k % BLOCK;
                    from = b * BLOCK + (i < 16 ? 2 * i : 2 * (i - 16) + 1);
                }
                tile[k * width + j] = present ? src[from] : 0.0f;
            }
        }
    }
}

/* The L2 cache of one core in bytes (0 where the C library cannot tell), asked once: some C libraries run cpuid
 * for it, which a VM traps. */
static int64_t l2_bytes(void) {
    static int64_t known = -1;
    if (known >= 0) return known;
    long size = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    size = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    known = size > 0 ? size : 0;
    return known;
}

/* Tokens a pass of the panel GEMM takes for rows of `cols` floats. Each pass decodes or widens the rows once more,
 * so fewer passes pay where the tiles still stay in L2: at AVX-512, GEMM_TOKEN_BLOCK_MAX where those tokens' tiles
 * fill at most 3/4 of L2, else GEMM_TOKEN_BLOCK. Measured on the Intel Xeon VM (2 MB L2; 2026-12-03, 2 threads,
 * A/B in one process, 128 against 64 tokens a pass): the bf16 unembedding x 128 tokens (tiles 1.47 MB) 285 -> 320
 * GFLOP/s; x 512 tokens, a 20b gate_up 354 -> 364, a bf16 5120 x 2880 298-319 -> 316-330; at K = 4096 (tiles 2 MB,
 * all of L2) 349 -> 345-347; capped at AVX2 -4% to +1.5%; the wide benchmark model's 512-token float32 prefill (all
 * logits) 118.5 -> 124.0 tok/s, medians of three alternated.
 * At AVX2, GEMM_TOKEN_BLOCK where its tiles fit in 3/4 of L2, else GEMM_TOKEN_BLOCK_MAX: the tiles then come from
 * L3 either way, and each widened panel serves twice the tokens. Measured on an AVX2-only Zen 3 (512 KB L2, where
 * 64 tokens of 20b's width are 737 KB; 2026-12-03, 2 threads, A/B in one process, medians of 9): the bf16
 * unembedding x 512 tokens 108.7 -> 119.6, 125.6 -> 136.5 GFLOP/s in two runs, a 20b gate_up x 512 122.0 -> 129.1,
 * 132.2 -> 147.2; 256 tokens a pass no faster than 128; the wide model's float32 prefill 51.7 -> 54.7 tok/s
 * (medians of four alternated).
 * Each output is the same sum either way: the pass size changes no result. */
static int64_t gemm_token_block(int64_t cols) {
    int64_t per_token = cols * (int64_t)sizeof(float), l2 = l2_bytes();
    if (use_avx512()) return 4 * GEMM_TOKEN_BLOCK_MAX * per_token <= 3 * l2 ? GEMM_TOKEN_BLOCK_MAX : GEMM_TOKEN_BLOCK;
    return l2 > 0 && 4 * GEMM_TOKEN_BLOCK * per_token > 3 * l2 ? GEMM_TOKEN_BLOCK_MAX : GEMM_TOKEN_BLOCK;
}

#endif

/* The tokens a pass of the panel GEMM takes for rows of `cols` floats on this machine, for reports and tests (0
 * where the panel GEMM does not run). */
int64_t mxg_gemm_token_block(int64_t cols) {
#if HAVE_AVX2_PATH
    if (use_avx2()) return gemm_token_block(cols);
#endif
    (void)cols;
    return 0;
}

/* y[t, r] = sum_k x[t, k] * W[r, k] (+ bias[r]) for any number of tokens through the panel GEMM; W of `kind`: 0
 * MXFP4 (blocks, scales), 1 bf16, 2 float32 (dense). With swiglu, out[t, r/2] = the clamped SwiGLU of each pair.
 * Returns 0 (nothing done) where the CPU lacks AVX2 or memory was not to be had: the caller takes another path. */
int mxg_gemm(int kind, const uint8_t *blocks, const uint8_t *scales, const void *dense, int64_t rows, int64_t cols,
             const float *x, int64_t tokens, const float *bias, float *y, int swiglu, float limit, float alpha,
             float *out, int threads) {
#if HAVE_AVX2_PATH
    if (!use_avx2() || tokens < 1 || (kind == 0 && cols % BLOCK)) return 0;
    pthread_once(&tables_once, build_tables);
    int64_t padded = (tokens + GEMM_TILE - 1) / GEMM_TILE * GEMM_TILE;
    float *packed = malloc(sizeof(float) * padded * cols);
    if (packed == NULL) return 0;
    PackTask pack = {x, tokens, cols, kind == 0, use_avx512(), packed};
    pool_run(pack_tiles, &pack, padded / GEMM_TILE, 1, threads);
    int64_t block = gemm_token_block(cols);
    Task call = {kind, blocks, scales, (const uint16_t *)dense, (const float *)dense, rows, cols, tokens, NULL, NULL,
                 bias, y, swiglu, limit, alpha, out, 0, rows};
    for (int64_t t0 = 0; t0 < tokens; t0 += block) {
        Task t = gemm_pass(call, t0, tokens - t0 < block ? tokens - t0 : block);
        t.xs = packed + t0 * cols;
        pool_run(run_rows, &t, rows, GEMM_ROWS, threads);
    }
    free(packed);
    return 1;
#else
    return 0;
#endif
}

/* mxg_gemm for MXFP4 W with x quantized to int8 a (token, block) at a time (quantize_block) first: y[t, r] =
 * sum over blocks of the block's integer products times 2**(s - 128) d (+ bias[r]); with swiglu, out as there.
 * Returns 0 (nothing done) where the CPU lacks AVX2 or memory was not to be had. */
int mxg_gemm_int8(const uint8_t *blocks, const uint8_t *scales, int64_t rows, int64_t cols, const float *x,
                  int64_t tokens, const float *bias, float *y, int swiglu, float limit, float alpha, float *out,
                  int threads) {
#if HAVE_AVX2_PATH
    if (!use_avx2() || tokens < 1 || cols % BLOCK) return 0;
    pthread_once(&tables_once, build_tables);
    int64_t tiles = (tokens + GEMM_TILE - 1) / GEMM_TILE, nb = cols / BLOCK;
    int8_t *codes = malloc((size_t)(tiles * GEMM_TILE * cols));
    float *block_scales = malloc(sizeof(float) * tiles * nb * GEMM_TILE);
    int32_t *offset = malloc(sizeof(int32_t) * tiles * nb * GEMM_TILE);
    int done = codes && block_scales && offset;
    if (done) {
        PackQ8Task pack = {x, tokens, cols, codes, block_scales, offset};
        pool_run(pack_q8, &pack, tiles, 1, threads);
        Task call = {0, blocks, scales, NULL, NULL, rows, cols, tokens, NULL, NULL, bias, y, swiglu, limit, alpha,
                     out, 0, rows};
        for (int64_t t0 = 0; t0 < tokens; t0 += GEMM_TOKEN_BLOCK_MAX) {
            Task t = gemm_pass(call, t0, tokens - t0 < GEMM_TOKEN_BLOCK_MAX ? tokens - t0 : GEMM_TOKEN_BLOCK_MAX);
            int64_t first_tile = t0 / GEMM_TILE;
            t.q8 = (PackedQ8){codes + first_tile * GEMM_TILE * cols, block_scales + first_tile * nb * GEMM_TILE,
                              offset + first_tile * nb * GEMM_TILE};
            pool_run(run_rows, &t, rows, GEMM_ROWS, threads);
        }
    }
    free(codes);
    free(block_scales);
    free(offset);
    return done;
#else
    return 0;
#endif
}

int mxg_max_tokens(void) { return MAX_TOKENS; }

/* ---- the machine's read bandwidth, for benchmarks: a streaming sum of n floats over the pool's threads ---- */

typedef struct {
    const float *data;
    int64_t n, chunk;
    float *partial; /* one sum a chunk */
} StreamTask;

#if HAVE_AVX2_PATH
__attribute__((target("avx2,fma"))) static float stream_sum_avx2(const float *p, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        prefetch_ahead(p + i); /* as the products do, so the bandwidth they are measured against is as high */
        prefetch_ahead(p + i + 16);
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
    }
    float total = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) total += p[i];
    return total;
}
#endif

static void stream_chunks(void *context, int64_t begin, int64_t end) {
    const StreamTask *t = (const StreamTask *)context;
    for (int64_t c = begin; c < end; c++) {
        const float *p = t->data + c * t->chunk;
        int64_t n = (c + 1) * t->chunk <= t->n ? t->chunk : t->n - c * t->chunk;
#if HAVE_AVX2_PATH
        if (use_avx2()) {
            t->partial[c] = stream_sum_avx2(p, n);
            continue;
        }
#endif
        float total = 0.0f;
        for (int64_t i = 0; i < n; i++) total += p[i];
        t->partial[c] = total;
    }
}

/* The sum of n floats read once from memory on `threads` threads (its time is the benchmark's figure). */
float mxg_stream_sum(const float *data, int64_t n, int threads) {
    const int64_t chunk = 1 << 16;
    int64_t chunks = (n + chunk - 1) / chunk;
    float *partial = calloc(chunks > 0 ? chunks : 1, sizeof(float));
    if (partial == NULL) return NAN;
    StreamTask t = {data, n, chunk, partial};
    pool_run(stream_chunks, &t, chunks, 1, threads);
    float total = 0.0f;
    for (int64_t c = 0; c < chunks; c++) total += partial[c];
    free(partial);
    return total;
}


/* ---- the machine's FMA rate, for benchmarks: twelve independent chains of FMAs a thread (enough to cover the
 * instruction's latency on two units), 512-bit at the AVX-512 levels, 256-bit at AVX2 ---- */

/* NAME(steps): twelve independent chains v = v * m + a of VEC, started from distinct values (the compiler merges
 * identical chains into one), their lanes summed at the end so that no chain's work can be dropped. */
#define FMA_CHAINS_FUNCTION(NAME, TARGET, VEC, SET1, FMA, ADD, SUM)                                               \
    __attribute__((target(TARGET))) static float NAME(int64_t steps) {                                            \
        VEC m = SET1(0.999f), a = SET1(1e-3f), v0 = SET1(1.0f), v1 = SET1(1.0625f), v2 = SET1(1.125f),            \
            v3 = SET1(1.1875f), v4 = SET1(1.25f), v5 = SET1(1.3125f), v6 = SET1(1.375f), v7 = SET1(1.4375f),      \
            v8 = SET1(1.5f), v9 = SET1(1.5625f), v10 = SET1(1.625f), v11 = SET1(1.6875f);                          \
        for (int64_t k = 0; k < steps; k++) {                                                                      \
            v0 = FMA(v0, m, a), v1 = FMA(v1, m, a), v2 = FMA(v2, m, a), v3 = FMA(v3, m, a);                        \
            v4 = FMA(v4, m, a), v5 = FMA(v5, m, a), v6 = FMA(v6, m, a), v7 = FMA(v7, m, a);                        \
            v8 = FMA(v8, m, a), v9 = FMA(v9, m, a), v10 = FMA(v10, m, a), v11 = FMA(v11, m, a);                    \
        }                                                                                                          \
        VEC t = ADD(ADD(ADD(v0, v1), ADD(v2, v3)), ADD(ADD(v4, v5), ADD(v6, v7)));                                 \
        return SUM(ADD(t, ADD(ADD(v8, v9), ADD(v10, v11))));                                                       \
    }

#if HAVE_AVX2_PATH
FMA_CHAINS_FUNCTION(fma_chains_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, hsum256)
FMA_CHAINS_FUNCTION(fma_chains_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps,
                    _mm512_reduce_add_ps)
#endif

typedef struct {
    int64_t steps;
    float *sums; /* one a unit, so no chain's work can be dropped */
} FmaTask;

static void fma_units(void *context, int64_t begin, int64_t end) {
    const FmaTask *t = (const FmaTask *)context;
    for (int64_t u = begin; u < end; u++) {
#if HAVE_AVX2_PATH
        t->sums[u] = use_avx512() ? fma_chains_avx512(t->steps) : fma_chains_avx2(t->steps);
#else
        t->sums[u] = 0.0f;
#endif
    }
}

/* About steps x 12 FMAs a thread on `threads` threads at the widest level the products use, in 16 units a thread
 * (taken from the pool's shared counter, so a slow core hands work over); returns the floating-point operations
 * done (2 a lane), or 0 without AVX2 or memory (the benchmark's figure is that over its time). */
double mxg_fma_chains(int64_t steps, int threads) {
    if (!use_avx2() || threads < 1) return 0.0;
    int64_t units = 16 * (int64_t)threads;
    float *sums = malloc(sizeof(float) * units);
    if (sums == NULL) return 0.0;
    FmaTask t = {steps / 16 + 1, sums};
    pool_run(fma_units, &t, units, 1, threads); /* the sums go through the pool: their chains cannot be dropped */
    free(sums);
    return (double)units * (double)t.steps * 12.0 * (use_avx512() ? 16 : 8) * 2.0;
}

static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu_gemv", "CPU GEMV kernels (called through ctypes).", -1, NULL};
PyMODINIT_FUNC PyInit__cpu_gemv(void) { return PyModule_Create(&module); }
