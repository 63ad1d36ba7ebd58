/* Unit tests for the reduced-precision conversions in runtime/core/dtype_convert.c: exhaustive round
 * trips of every float16 / bfloat16 / float8 / float4 code, rounding at halfway points (ties to
 * even), the extremes (max finite, min subnormal, overflow to Inf), NaN handling, negative zero
 * in the FNUZ formats, and the saturate / non-saturate rules of the ONNX Cast spec. */
#include "tests/unit/harness.h"
#include "runtime/core/dtype.h"

START_TEST(test_f16_round_trip_all_codes) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kn_f16_to_f32((uint16_t)h);
        if (((h >> 10) & 0x1f) == 0x1f && (h & 0x3ff)) {
            FAST_ASSERT(isnan(f), "code %04x should be NaN", h);
            FAST_ASSERT(isnan(kn_f16_to_f32(kn_f32_to_f16(f))), "NaN code %04x", h);
            continue;
        }
        FAST_ASSERT(kn_f32_to_f16(f) == h, "code %04x -> %g -> %04x", h, f, kn_f32_to_f16(f));
    }
}
END_TEST

START_TEST(test_f16_edges) {
    ck_assert_uint_eq(kn_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(kn_f32_to_f16(65519.0f), 0x7bff); /* below the halfway point to 65536 */
    ck_assert_uint_eq(kn_f32_to_f16(65520.0f), 0x7c00); /* halfway rounds to even: Inf */
    ck_assert_uint_eq(kn_f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(kn_f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(kn_f32_to_f16(ldexpf(1.0f, -24)), 0x0001); /* min subnormal */
    ck_assert_uint_eq(kn_f32_to_f16(ldexpf(1.0f, -25)), 0x0000); /* halfway to zero: even */
    ck_assert_uint_eq(kn_f32_to_f16(ldexpf(3.0f, -25)), 0x0002); /* 1.5 ulp: to even (2) */
    ck_assert_uint_eq(kn_f32_to_f16(ldexpf(1.0f, -14)), 0x0400); /* min normal */
    ck_assert_uint_eq(kn_f32_to_f16(-0.0f), 0x8000);
    ck_assert_uint_eq(kn_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);     /* tie to even: down */
    ck_assert_uint_eq(kn_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02); /* tie to even: up */
    uint16_t nan = kn_f32_to_f16(NAN);
    ck_assert((nan & 0x7c00) == 0x7c00 && (nan & 0x3ff) != 0);
    ck_assert(kn_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    ck_assert(isinf(kn_f16_to_f32(0x7c00)));
}
END_TEST

START_TEST(test_bf16) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kn_bf16_to_f32((uint16_t)h);
        if (isnan(f)) {
            FAST_ASSERT(isnan(kn_bf16_to_f32(kn_f32_to_bf16(f))), "bf16 NaN %04x", h);
            continue;
        }
        FAST_ASSERT(kn_f32_to_bf16(f) == h, "bf16 code %04x", h);
    }
    ck_assert_uint_eq(kn_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80);     /* tie: even, down */
    ck_assert_uint_eq(kn_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82); /* tie: even, up */
    ck_assert_uint_eq(kn_f32_to_bf16(3.4e38f), 0x7f80);                     /* rounds past max: Inf */
    /* a NaN whose payload sits only in the low bits must stay NaN */
    float low_nan;
    uint32_t u = 0x7f800001u;
    memcpy(&low_nan, &u, 4);
    ck_assert(isnan(kn_bf16_to_f32(kn_f32_to_bf16(low_nan))));
}
END_TEST

static const kn_dtype f8_types[] = {KN_F8E4M3FN, KN_F8E4M3FNUZ, KN_F8E5M2, KN_F8E5M2FNUZ};
static const float f8_max[] = {448.0f, 240.0f, 57344.0f, 57344.0f};

START_TEST(test_f8_round_trip_all_codes) {
    for (int k = 0; k < 4; k++)
        for (int v = 0; v < 256; v++) {
            float f = kn_f8_to_f32((uint8_t)v, f8_types[k]);
            if (isnan(f)) {
                ck_assert(isnan(kn_f8_to_f32(kn_f32_to_f8(f, f8_types[k], true), f8_types[k])));
                continue;
            }
            if (isinf(f)) {
                ck_assert(f8_types[k] == KN_F8E5M2);
                ck_assert_uint_eq(kn_f32_to_f8(f, f8_types[k], false), v);
                continue;
            }
            ck_assert_msg(kn_f32_to_f8(f, f8_types[k], true) == v && kn_f32_to_f8(f, f8_types[k], false) == v,
                          "type %d code %02x value %g", f8_types[k], v, f);
            ck_assert(fabsf(f) <= f8_max[k]);
        }
}
END_TEST

START_TEST(test_f8_edges) {
    for (int k = 0; k < 4; k++) {
        kn_dtype t = f8_types[k];
        bool fnuz = t == KN_F8E4M3FNUZ || t == KN_F8E5M2FNUZ;
        /* saturate: Inf and overflow go to +-max */
        ck_assert(kn_f8_to_f32(kn_f32_to_f8(INFINITY, t, true), t) == f8_max[k]);
        ck_assert(kn_f8_to_f32(kn_f32_to_f8(-1e9f, t, true), t) == -f8_max[k]);
        /* no saturate: NaN, or Inf for E5M2 */
        float big = kn_f8_to_f32(kn_f32_to_f8(1e9f, t, false), t);
        if (t == KN_F8E5M2) ck_assert(isinf(big) && big > 0);
        else ck_assert(isnan(big));
        ck_assert(isnan(kn_f8_to_f32(kn_f32_to_f8(NAN, t, true), t)));
        /* negative zero exists only outside FNUZ; tiny values underflow to zero */
        ck_assert_uint_eq(kn_f32_to_f8(-0.0f, t, true), fnuz ? 0x00 : 0x80);
        ck_assert_uint_eq(kn_f32_to_f8(-1e-7f, t, true), fnuz ? 0x00 : 0x80);
        if (fnuz) ck_assert_uint_eq(kn_f32_to_f8(NAN, t, false), 0x80);
    }
    ck_assert_uint_eq(kn_f32_to_f8(464.0f, KN_F8E4M3FN, false), 0x7e); /* halfway 448/480: even, 448 */
    ck_assert_uint_eq(kn_f32_to_f8(465.0f, KN_F8E4M3FN, false), 0x7f); /* rounds past max: NaN */
    ck_assert_uint_eq(kn_f32_to_f8(-465.0f, KN_F8E4M3FN, false), 0xff);
    ck_assert_uint_eq(kn_f32_to_f8(NAN, KN_F8E4M3FN, true), 0x7f);
    ck_assert_uint_eq(kn_f32_to_f8(INFINITY, KN_F8E5M2, false), 0x7c);
    ck_assert_uint_eq(kn_f32_to_f8(-INFINITY, KN_F8E5M2, true), 0xfb);
    ck_assert_uint_eq(kn_f32_to_f8(ldexpf(1.0f, -9), KN_F8E4M3FN, true), 0x01);  /* min subnormal */
    ck_assert_uint_eq(kn_f32_to_f8(ldexpf(1.0f, -10), KN_F8E4M3FN, true), 0x00); /* halfway: even */
    ck_assert_uint_eq(kn_f32_to_f8(ldexpf(3.0f, -10), KN_F8E4M3FN, true), 0x02); /* 1.5 ulp: even */
    ck_assert_uint_eq(kn_f32_to_f8(ldexpf(1.0f, -16), KN_F8E5M2, true), 0x01);
    ck_assert_uint_eq(kn_f32_to_f8(0.47892547f, KN_F8E4M3FN, true), 0x2f); /* 0.46875 */
    /* e8m0: powers of two, NaN code, round-up default */
    ck_assert(kn_f8_to_f32(127, KN_F8E8M0) == 1.0f);
    ck_assert(isnan(kn_f8_to_f32(0xff, KN_F8E8M0)));
    ck_assert_uint_eq(kn_f32_to_f8(1.1f, KN_F8E8M0, true), 128);
    ck_assert_uint_eq(kn_f32_to_f8(4.0f, KN_F8E8M0, true), 129);
}
END_TEST

START_TEST(test_f4) {
    static const float values[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (int v = 0; v < 16; v++) {
        float f = kn_f4e2m1_to_f32((uint8_t)v);
        ck_assert(f == (v & 8 ? -values[v & 7] : values[v & 7]));
        ck_assert((signbit(f) != 0) == ((v & 8) != 0));
        ck_assert_uint_eq(kn_f32_to_f4e2m1(f), v);
    }
    ck_assert_uint_eq(kn_f32_to_f4e2m1(1e6f), 0x7); /* saturates */
    ck_assert_uint_eq(kn_f32_to_f4e2m1(-INFINITY), 0xf);
    ck_assert_uint_eq(kn_f32_to_f4e2m1(0.25f), 0x0); /* halfway 0 / 0.5: even */
    ck_assert_uint_eq(kn_f32_to_f4e2m1(0.75f), 0x2); /* halfway 0.5 / 1: even */
    ck_assert_uint_eq(kn_f32_to_f4e2m1(2.5f), 0x4);  /* halfway 2 / 3: even */
    ck_assert_uint_eq(kn_f32_to_f4e2m1(5.0f), 0x6);  /* halfway 4 / 6: even */
    ck_assert_uint_eq(kn_f32_to_f4e2m1(-3.5f), 0xe);
    ck_assert_uint_eq(kn_f32_to_f4e2m1(0.01f), 0x0);
    ck_assert_uint_eq(kn_f32_to_f4e2m1(NAN), 0x8); /* ml_dtypes' choice, which ONNX tests use */
}
END_TEST

START_TEST(test_random_monotone) {
    /* conversions are monotone and within half an ulp of the source on random inputs */
    uint32_t s = 1;
    for (int i = 0; i < 200000; i++) {
        s = s * 1664525u + 1013904223u;
        float f = ldexpf((float)(s >> 8) / 16777216.0f, (int)(s % 40) - 20) * ((s & 1) ? -1.0f : 1.0f);
        float h = kn_f16_to_f32(kn_f32_to_f16(f));
        if (fabsf(f) < 65504.0f && fabsf(f) >= ldexpf(1.0f, -14))
            FAST_ASSERT(fabsf(h - f) <= fabsf(f) * ldexpf(1.0f, -11), "f16 %g -> %g", f, h);
        float b = kn_bf16_to_f32(kn_f32_to_bf16(f));
        FAST_ASSERT(fabsf(b - f) <= fabsf(f) * ldexpf(1.0f, -8), "bf16 %g -> %g", f, b);
        float e = kn_f8_to_f32(kn_f32_to_f8(f, KN_F8E4M3FN, true), KN_F8E4M3FN);
        if (fabsf(f) < 448.0f && fabsf(f) >= ldexpf(1.0f, -6))
            FAST_ASSERT(fabsf(e - f) <= fabsf(f) * ldexpf(1.0f, -4), "e4m3 %g -> %g", f, e);
    }
}
END_TEST

static Suite *dtype_suite(void) {
    Suite *s = suite_create("dtype");
    TCase *tc = tcase_create("convert");
    tcase_add_test(tc, test_f16_round_trip_all_codes);
    tcase_add_test(tc, test_f16_edges);
    tcase_add_test(tc, test_bf16);
    tcase_add_test(tc, test_f8_round_trip_all_codes);
    tcase_add_test(tc, test_f8_edges);
    tcase_add_test(tc, test_f4);
    tcase_add_test(tc, test_random_monotone);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return kn_test_run_suite(dtype_suite()); }
