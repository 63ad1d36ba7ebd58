/* The level 4 int8 GEMM's register tile with AVX-512 VNNI (kernels/cpu/nbits_i8gemm.h): up to 4
 * rows of A against 32 columns, two 512-bit vectors of int32 sums a row, vpdpbusd adding 4
 * products of unsigned weight bytes and signed A bytes per lane in one instruction (no
 * saturation: the 8-bit weights go in as they are). Picked at run time where the CPU has VNNI. */
#pragma GCC target("avx512vnni")
#include "kernels/cpu/nbits_i8gemm.h"
#include "kernels/cpu/nbits.h"
#include <immintrin.h>
#include <string.h>

enum { MR = KN_NBITS_I8G_MR_VNNI, PW = KN_NBITS_I8G_PW };

static inline __m512i i8g_bcast(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* Per block: the integer sums in registers, then each column's float32 chain as the plain loop
 * does it (fma of the sum by sa * sb, block by block), so the bits are the plain loop's. The
 * zero-point chain runs afterwards over the blocks, in its own order too. Inlined per row count so
 * the accumulators stay in registers. */
static inline __attribute__((always_inline)) void i8g_tile(const int8_t *qa, int64_t ldq, const float *sa,
                                                           const float *asum, int64_t lds, int nr,
                                                           const uint32_t *panel, const float *sbp, const float *offp,
                                                           int64_t nb, int bits, int64_t bs, const float *biasp,
                                                           float *y, int64_t ldy, int nc) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    int64_t wpb = bs * bits / 32; /* words a block */
    const uint32_t *p = panel;
    for (int64_t b = 0; b < nb; b++) {
        __m512i d[MR][2];
        for (int r = 0; r < MR; r++) d[r][0] = d[r][1] = _mm512_setzero_si512();
        const int8_t *q = qa + b * bs;
        if (bits == 4) {
            for (int64_t w = 0; w < wpb; w++, p += PW, q += 8) {
                __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 16);
                __m512i l0 = _mm512_and_si512(v0, m4), h0 = _mm512_and_si512(_mm512_srli_epi16(v0, 4), m4);
                __m512i l1 = _mm512_and_si512(v1, m4), h1 = _mm512_and_si512(_mm512_srli_epi16(v1, 4), m4);
                for (int r = 0; r < nr; r++) {
                    __m512i ae = i8g_bcast(q + r * ldq), ao = i8g_bcast(q + r * ldq + 4);
                    d[r][0] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(d[r][0], l0, ae), h0, ao);
                    d[r][1] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(d[r][1], l1, ae), h1, ao);
                }
            }
        } else {
            for (int64_t w = 0; w < wpb; w++, p += PW, q += 4) {
                __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 16);
                for (int r = 0; r < nr; r++) {
                    __m512i a = i8g_bcast(q + r * ldq);
                    d[r][0] = _mm512_dpbusd_epi32(d[r][0], v0, a);
                    d[r][1] = _mm512_dpbusd_epi32(d[r][1], v1, a);
                }
            }
        }
        __m512 s0 = _mm512_loadu_ps(sbp + b * PW), s1 = _mm512_loadu_ps(sbp + b * PW + 16);
        for (int r = 0; r < nr; r++) {
            __m512 ar = _mm512_set1_ps(sa[r * lds + b]);
            acc[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][0]), _mm512_mul_ps(ar, s0), acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[r][1]), _mm512_mul_ps(ar, s1), acc[r][1]);
        }
    }
    __m512 zs[MR][2];
    for (int r = 0; r < MR; r++) zs[r][0] = zs[r][1] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        __m512 o0 = _mm512_loadu_ps(offp + b * PW), o1 = _mm512_loadu_ps(offp + b * PW + 16);
        for (int r = 0; r < nr; r++) {
            __m512 z = _mm512_set1_ps(asum[r * lds + b]);
            zs[r][0] = _mm512_fmadd_ps(z, o0, zs[r][0]);
            zs[r][1] = _mm512_fmadd_ps(z, o1, zs[r][1]);
        }
    }
    __mmask16 k0 = nc >= 16 ? 0xffff : (__mmask16)((1u << nc) - 1);
    __mmask16 k1 = nc >= 32 ? 0xffff : nc <= 16 ? 0 : (__mmask16)((1u << (nc - 16)) - 1);
    for (int r = 0; r < nr; r++) {
        if (biasp) {
            acc[r][0] = _mm512_add_ps(acc[r][0], _mm512_loadu_ps(biasp));
            acc[r][1] = _mm512_add_ps(acc[r][1], _mm512_loadu_ps(biasp + 16));
        }
        _mm512_mask_storeu_ps(y + r * ldy, k0, _mm512_add_ps(acc[r][0], zs[r][0]));
        _mm512_mask_storeu_ps(y + r * ldy + 16, k1, _mm512_add_ps(acc[r][1], zs[r][1]));
    }
}

void kn_nbits_i8g_tile_vnni(const int8_t *qa, int64_t ldq, const float *sa, const float *asum, int64_t lds, int nr,
                            const uint32_t *panel, const float *sbp, const float *offp, int c0, int64_t nb, int bits,
                            int64_t bs, const float *biasp, float *y, int64_t ldy, int nc) {
    (void)c0; /* the tile is the panel's width */
#define I8G_ROWS(n) i8g_tile(qa, ldq, sa, asum, lds, n, panel, sbp, offp, nb, bits, bs, biasp, y, ldy, nc)
    if (nr == 1) I8G_ROWS(1);
    else if (nr == 2) I8G_ROWS(2);
    else if (nr == 3) I8G_ROWS(3);
    else I8G_ROWS(4);
#undef I8G_ROWS
}

/* 16 x 16 words transposed in registers: r[c] holds 16 words of column c, r[e] gets word e of the
 * 16 columns (unpacks of 32 then 64 bits within 128-bit lanes, then two rounds of lane shuffles) */
static inline void i8g_transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        u[i / 4] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i / 4 + 4] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i / 4 + 8] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i / 4 + 12] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    /* u[4k + g]: word 4L + k of columns 4g..4g+3 in lane L */
    for (int k = 0; k < 4; k++) {
        __m512i xl = _mm512_shuffle_i32x4(u[4 * k], u[4 * k + 1], 0x44),
                xh = _mm512_shuffle_i32x4(u[4 * k], u[4 * k + 1], 0xee);
        __m512i yl = _mm512_shuffle_i32x4(u[4 * k + 2], u[4 * k + 3], 0x44),
                yh = _mm512_shuffle_i32x4(u[4 * k + 2], u[4 * k + 3], 0xee);
        r[k] = _mm512_shuffle_i32x4(xl, yl, 0x88);
        r[4 + k] = _mm512_shuffle_i32x4(xl, yl, 0xdd);
        r[8 + k] = _mm512_shuffle_i32x4(xh, yh, 0x88);
        r[12 + k] = _mm512_shuffle_i32x4(xh, yh, 0xdd);
    }
}

void kn_nbits_i8g_words_avx512(const uint8_t *b, int64_t cs, int64_t n0, int nc, uint32_t *panel) {
    int64_t nw = cs / 4;
    for (int g = 0; g < PW; g += 16)
        for (int64_t w0 = 0; w0 < nw; w0 += 16) {
            int nv = nw - w0 < 16 ? (int)(nw - w0) : 16;
            __mmask16 m = (__mmask16)((1u << nv) - 1);
            __m512i r[16];
            for (int c = 0; c < 16; c++)
                r[c] =
                    g + c < nc ? _mm512_maskz_loadu_epi32(m, b + (n0 + g + c) * cs + 4 * w0) : _mm512_setzero_si512();
            i8g_transpose16(r);
            for (int e = 0; e < nv; e++) _mm512_storeu_si512(panel + (w0 + e) * PW + g, r[e]);
        }
}
