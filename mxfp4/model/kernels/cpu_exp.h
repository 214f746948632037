/* A vector exp for the CPU kernels' x86 sections (_cpu_attention.c's softmax, _cpu_gemv.c's SwiGLU): include
 * after <immintrin.h>. */
#ifndef MXFP4_CPU_EXP_H
#define MXFP4_CPU_EXP_H

/* exp of eight floats x <= 0 (a logit less the running maximum; a sigmoid's exp(-|z|)), within 2 ulp of the
 * correctly rounded value (tests/model/test_attention_cpu.py checks it against float64 over [-87.3, 0]):
 * n = round(x / ln 2), the remainder r = x - n ln 2 with ln 2 split in two (Cody-Waite: n * C1 is exact), Cephes'
 * degree-5 polynomial for (exp(r) - 1 - r) / r^2 on |r| <= ln(2) / 2, then 2**n put into the exponent bits.
 * Below -87.33 (2**-126) the result is flushed to 0 where expf would give a denormal (< 1.2e-38: nothing next to
 * the sink's share); NaN stays NaN. glibc's expf, one call a logit, was ~40% of a decode call at 512 cached
 * positions, and a fifth of a 512-token gate_up with its fused SwiGLU. */
__attribute__((target("avx2,fma"))) static inline __m256 exp_nonpositive(__m256 x) {
    const __m256 lowest = _mm256_set1_ps(-87.33654f);
    __m256 clamped = _mm256_max_ps(lowest, x); /* the second operand when x is NaN: NaN goes through */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(clamped, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), clamped);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 result = _mm256_mul_ps(y, _mm256_castsi256_ps(exponent));
    return _mm256_blendv_ps(result, _mm256_setzero_ps(), _mm256_cmp_ps(x, lowest, _CMP_LT_OQ));
}

#endif
