/* gpt-oss attention of a few queries (decoding, small chunks) against a KV cache on the CPU, in one call: logits,
 * the sink, the sliding window and the weighted sum of values without a torch op between them. Called from
 * mxfp4/model/kernels/cpu_attention.py through ctypes; the (batch, KV head) pairs are split over the pool's
 * threads (cpu_pool.h).
 *
 * What it computes (attention_torch.attention's result): query head h = kv * G + g, query i of T, sees key j
 * (of the latest S positions, so the T queries are the last T of them) when j <= i + S - T and, with a window, j > i + S - T - window; its output is
 * sum_j softmax_j * v_j where the softmax runs over the allowed logits l_j = scale * q.k_j and the head's sink,
 * which joins the denominator only. Arithmetic: float32 throughout (bf16 inputs widened exactly), the softmax
 * online over chunks of CHUNK keys, started from the sink (running maximum = sink, denominator = 1): a chunk whose
 * maximum is larger rescales the denominator and the accumulated values by exp(old - new). The bound the tests
 * hold it to is in tests/model/test_attention_cpu.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_bf16.h"
#include "cpu_pool.h"

#define CHUNK 64      /* keys whose logits are held at once */
#define ROW_BLOCK 32  /* query rows (G heads x T queries of one KV head) taken together */
#define MAX_DIM 128   /* head dims above this are left to torch (gpt-oss: 64); bounds the ~100 KB of stack a call takes */
#define INLINE static inline __attribute__((always_inline))

typedef struct {
    const void *q, *k, *v; /* [B, H, T, D], [B, KV, S, D], [B, KV, S, D], bf16 or float32: q contiguous, k and v
                              with `capacity` positions between one KV head's first and the next one's */
    const float *sinks;    /* [H] */
    void *out;             /* [B, H, T, D], the inputs' dtype */
    int is_bf16;
    int64_t heads, kv_heads, queries, keys, dim, window; /* window <= 0: none */
    int64_t capacity; /* >= keys: a cache's store holds room for positions not written yet */
    float scale;
} Attention;

INLINE void store(void *base, int64_t i, float value, int is_bf16) {
    if (is_bf16)
        ((uint16_t *)base)[i] = f32_to_bf16(value);
    else
        ((float *)base)[i] = value;
}

/* logits[c] = q . keys[c] for c < n (n rounded up to 8; rows past n are zeros): plain C, eight partial sums. */
INLINE void logits_portable(const float *q, float keys[][MAX_DIM], int64_t n, int64_t dim, float *logits) {
    for (int64_t c = 0; c < n; c++) {
        float partial[8] = {0};
        int64_t d = 0;
        for (; d + 8 <= dim; d += 8)
            for (int u = 0; u < 8; u++) partial[u] += q[d + u] * keys[c][d + u];
        float total = 0.0f;
        for (int u = 0; u < 8; u++) total += partial[u];
        for (; d < dim; d++) total += q[d] * keys[c][d];
        logits[c] = total;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(MXFP4_PORTABLE)
#include <immintrin.h>
#define HAVE_AVX2_PATH 1
#include "cpu_exp.h"

/* The same for dim a multiple of 8: eight keys at a time, one accumulator each, the eight sums reduced together
 * (three rounds of pairwise adds) into one vector of eight logits. */
__attribute__((target("avx2,fma"))) static void logits_avx2(const float *q, float keys[][MAX_DIM], int64_t n,
                                                             int64_t dim, float *logits) {
    for (int64_t c = 0; c < n; c += 8) {
        __m256 acc[8];
        for (int u = 0; u < 8; u++) acc[u] = _mm256_setzero_ps();
        for (int64_t d = 0; d < dim; d += 8) {
            __m256 qv = _mm256_loadu_ps(q + d);
            for (int u = 0; u < 8; u++) acc[u] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(keys[c + u] + d), acc[u]);
        }
        __m256 a01 = _mm256_hadd_ps(acc[0], acc[1]), a23 = _mm256_hadd_ps(acc[2], acc[3]);
        __m256 a45 = _mm256_hadd_ps(acc[4], acc[5]), a67 = _mm256_hadd_ps(acc[6], acc[7]);
        __m256 b0 = _mm256_hadd_ps(a01, a23), b1 = _mm256_hadd_ps(a45, a67); /* per 128-bit half: 4 keys' halves */
        __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(b0, b1, 0x20), _mm256_permute2f128_ps(b0, b1, 0x31));
        _mm256_storeu_ps(logits + c, sums);
    }
}

/* p[c] = exp(p[c] - top) for c in [from, to], eight at a time, the last few one at a time (expf). */
__attribute__((target("avx2,fma"))) static void weights_avx2(float *p, int64_t from, int64_t to, float top) {
    __m256 shift = _mm256_set1_ps(top);
    int64_t c = from;
    for (; c + 8 <= to + 1; c += 8) _mm256_storeu_ps(p + c, exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(p + c), shift)));
    for (; c <= to; c++) p[c] = expf(p[c] - top);
}

/* acc[d] += sum over c in [from, to] of p[c] * values[c][d], for dim a multiple of 8: 64 dims at a time held in
 * registers across the keys (in memory each add would wait for the previous one's store). Same order of adds. */
__attribute__((target("avx2,fma"))) static void accumulate_avx2(float *acc, const float *p, float values[][MAX_DIM],
                                                                 int64_t from, int64_t to, int64_t dim) {
    for (int64_t d0 = 0; d0 < dim; d0 += 64) {
        int width = dim - d0 < 64 ? (int)(dim - d0) / 8 : 8;
        __m256 sum[8];
        for (int u = 0; u < width; u++) sum[u] = _mm256_loadu_ps(acc + d0 + 8 * u);
        for (int64_t c = from; c <= to; c++) {
            __m256 weight = _mm256_set1_ps(p[c]);
            for (int u = 0; u < width; u++)
                sum[u] = _mm256_fmadd_ps(weight, _mm256_loadu_ps(values[c] + d0 + 8 * u), sum[u]);
        }
        for (int u = 0; u < width; u++) _mm256_storeu_ps(acc + d0 + 8 * u, sum[u]);
    }
}
#else
#define HAVE_AVX2_PATH 0
#endif

/* Rows [r0, r1) of one (batch, KV head) unit: row r is query head kv * G + r / T at query r % T. Each chunk of keys
 * and values is widened to float32 once and serves every row. vector: the caller is the AVX2 build. */
INLINE void attend_rows(const Attention *a, int64_t unit, int64_t r0, int64_t r1, int is_bf16, int vector) {
    int64_t t_count = a->queries, s_count = a->keys, dim = a->dim;
    int64_t groups = a->heads / a->kv_heads, b = unit / a->kv_heads, kv = unit % a->kv_heads;
    int64_t base = (b * a->kv_heads + kv) * a->capacity * dim;
    float q[ROW_BLOCK][MAX_DIM], acc[ROW_BLOCK][MAX_DIM], keys[CHUNK][MAX_DIM], values[CHUNK][MAX_DIM];
    float top[ROW_BLOCK], denominator[ROW_BLOCK], logits[CHUNK];
    int64_t first[ROW_BLOCK], last[ROW_BLOCK]; /* each row's allowed keys: first..last */
    int64_t lo = s_count, hi = -1;
    for (int64_t r = r0; r < r1; r++) {
        int64_t i = r % t_count, head = kv * groups + r / t_count, row = r - r0;
        int64_t q_offset = ((b * a->heads + head) * t_count + i) * dim;
        for (int64_t d = 0; d < dim; d++) q[row][d] = element(a->q, q_offset + d, is_bf16);
        memset(acc[row], 0, sizeof(float) * dim);
        top[row] = a->sinks[head];
        denominator[row] = 1.0f; /* the sink's own exp(sink - top) */
        last[row] = i + s_count - t_count < s_count - 1 ? i + s_count - t_count : s_count - 1;
        first[row] = a->window > 0 ? i + s_count - t_count - a->window + 1 : 0;
        if (first[row] < 0) first[row] = 0;
        if (first[row] < lo) lo = first[row];
        if (last[row] > hi) hi = last[row];
    }
    for (int64_t j0 = lo; j0 <= hi; j0 += CHUNK) {
        int64_t n = j0 + CHUNK <= hi + 1 ? CHUNK : hi + 1 - j0, padded = (n + 7) / 8 * 8;
        for (int64_t c = 0; c < n; c++)
            for (int64_t d = 0; d < dim; d++) keys[c][d] = element(a->k, base + (j0 + c) * dim + d, is_bf16);
        for (int64_t c = 0; c < n; c++)
            for (int64_t d = 0; d < dim; d++) values[c][d] = element(a->v, base + (j0 + c) * dim + d, is_bf16);
        for (int64_t c = n; c < padded; c++) memset(keys[c], 0, sizeof(float) * dim);
        for (int64_t r = r0; r < r1; r++) {
            int64_t row = r - r0;
            int64_t from = (first[row] > j0 ? first[row] : j0) - j0;
            int64_t to = (last[row] < j0 + n - 1 ? last[row] : j0 + n - 1) - j0;
            if (from > to) continue;
#if HAVE_AVX2_PATH
            if (vector && dim % 8 == 0)
                logits_avx2(q[row], keys, padded, dim, logits);
            else
#endif
                logits_portable(q[row], keys, n, dim, logits);
            float chunk_top = -INFINITY;
            for (int64_t c = from; c <= to; c++) {
                logits[c] *= a->scale;
                if (logits[c] > chunk_top || isnan(logits[c])) chunk_top = logits[c];
            }
            if (chunk_top > top[row] || isnan(chunk_top)) {
                float factor = expf(top[row] - chunk_top);
                denominator[row] *= factor;
                for (int64_t d = 0; d < dim; d++) acc[row][d] *= factor;
                top[row] = chunk_top;
            }
            /* the weights, in place of the logits */
#if HAVE_AVX2_PATH
            if (vector)
                weights_avx2(logits, from, to, top[row]);
            else
#endif
                for (int64_t c = from; c <= to; c++) logits[c] = expf(logits[c] - top[row]);
            for (int64_t c = from; c <= to; c++) denominator[row] += logits[c];
#if HAVE_AVX2_PATH
            if (vector && dim % 8 == 0) {
                accumulate_avx2(acc[row], logits, values, from, to, dim);
                continue;
            }
#endif
            for (int64_t c = from; c <= to; c++)
                for (int64_t d = 0; d < dim; d++) acc[row][d] += logits[c] * values[c][d];
        }
    }
    for (int64_t r = r0; r < r1; r++) {
        int64_t i = r % t_count, head = kv * groups + r / t_count, row = r - r0;
        int64_t offset = ((b * a->heads + head) * t_count + i) * dim;
        for (int64_t d = 0; d < dim; d++) store(a->out, offset + d, acc[row][d] / denominator[row], is_bf16);
    }
}

INLINE void attend_units(const Attention *a, int64_t begin, int64_t end, int is_bf16, int vector) {
    int64_t rows = (a->heads / a->kv_heads) * a->queries;
    for (int64_t unit = begin; unit < end; unit++)
        for (int64_t r0 = 0; r0 < rows; r0 += ROW_BLOCK)
            attend_rows(a, unit, r0, r0 + ROW_BLOCK < rows ? r0 + ROW_BLOCK : rows, is_bf16, vector);
}

#if HAVE_AVX2_PATH
__attribute__((target("avx2,fma"))) static void units_bf16_avx2(const Attention *a, int64_t b, int64_t e) {
    attend_units(a, b, e, 1, 1);
}
__attribute__((target("avx2,fma"))) static void units_f32_avx2(const Attention *a, int64_t b, int64_t e) {
    attend_units(a, b, e, 0, 1);
}
#endif

static void units_bf16(const Attention *a, int64_t b, int64_t e) { attend_units(a, b, e, 1, 0); }
static void units_f32(const Attention *a, int64_t b, int64_t e) { attend_units(a, b, e, 0, 0); }

/* MXFP4_CPU_PORTABLE=1 (read once) runs the plain C loops, as in _cpu_gemv.c: how the tests reach them here. */
static int use_avx2(void) {
#if HAVE_AVX2_PATH
    static int known = -1;
    if (known < 0) {
        const char *portable = getenv("MXFP4_CPU_PORTABLE");
        known = !(portable != NULL && portable[0] == '1') && __builtin_cpu_supports("avx2") &&
                __builtin_cpu_supports("fma");
    }
    return known;
#else
    return 0;
#endif
}

static void run_units(void *context, int64_t begin, int64_t end) {
    const Attention *a = (const Attention *)context;
#if HAVE_AVX2_PATH
    if (use_avx2()) {
        (a->is_bf16 ? units_bf16_avx2 : units_f32_avx2)(a, begin, end);
        return;
    }
#endif
    (a->is_bf16 ? units_bf16 : units_f32)(a, begin, end);
}

/* The vector exp above for tests: y[i] = exp(x[i]) for x[i] <= 0, n of them. Returns 0 without AVX2 + FMA. */
int mxa_exp(const float *x, float *y, int64_t n) {
#if HAVE_AVX2_PATH
    if (!use_avx2()) return 0;
    for (int64_t i = 0; i < n; i++) y[i] = x[i];
    weights_avx2(y, 0, n - 1, 0.0f);
    return 1;
#else
    (void)x, (void)y, (void)n;
    return 0;
#endif
}

/* Returns 0 (nothing done) for a head dim over MAX_DIM, heads not a multiple of kv_heads or a capacity under keys:
 * the caller keeps torch's path. */
int mxa_attention(const void *q, const void *k, const void *v, const float *sinks, void *out, int is_bf16,
                  int64_t batch, int64_t heads, int64_t kv_heads, int64_t queries, int64_t keys, int64_t capacity,
                  int64_t dim, int64_t window, float scale, int threads) {
    if (dim > MAX_DIM || dim < 1 || kv_heads < 1 || heads % kv_heads != 0 || capacity < keys) return 0;
    Attention a = {q, k, v, sinks, out, is_bf16, heads, kv_heads, queries, keys, dim, window, capacity, scale};
    pool_run(run_units, &a, batch * kv_heads, 1, threads);
    return 1;
}
