// test_conversions.c: bf16, f16 and fp8 e4m3 conversions on every bit pattern against
// reference formulas written here (sign * (1 + m / 2^bits) * 2^(e - bias), subnormals, NaN),
// and rounding from f32 against a brute-force search for the nearest representable value with
// ties to the even code.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "tensor.h"

// value of a small float format from its fields
static double decode_format(uint32_t bits, int exponent_bits, int mantissa_bits, int bias,
                            int has_infinity)
{
    uint32_t sign = bits >> (exponent_bits + mantissa_bits);
    uint32_t e = (bits >> mantissa_bits) & ((1u << exponent_bits) - 1);
    uint32_t m = bits & ((1u << mantissa_bits) - 1);
    uint32_t e_max = (1u << exponent_bits) - 1;
    double v;
    if (has_infinity && e == e_max)
        v = m ? NAN : INFINITY;
    else if (!has_infinity && e == e_max && m == (1u << mantissa_bits) - 1)
        v = NAN; // e4m3fn: only S.1111.111 is NaN
    else if (e == 0)
        v = ldexp((double)m, 1 - bias - mantissa_bits);
    else
        v = ldexp(1.0 + ldexp((double)m, -mantissa_bits), (int)e - bias);
    return sign ? -v : v;
}

static void expect_same(double want, float got, unsigned bits)
{
    if (isnan(want)) {
        if (!isnan(got))
            fail_msg("pattern 0x%x: expected NaN, got %g", bits, got);
        return;
    }
    if ((double)got != want || !signbit(got) != !signbit(want))
        fail_msg("pattern 0x%x: expected %.9g, got %.9g", bits, want, got);
}

static void test_decode_all_patterns(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 65536; b++) {
        expect_same(decode_format(b, 8, 7, 127, 1), bf16_to_f32((uint16_t)b), b);
        expect_same(decode_format(b, 5, 10, 15, 1), f16_to_f32((uint16_t)b), b);
    }
    for (uint32_t b = 0; b < 256; b++) {
        expect_same(decode_format(b, 4, 3, 7, 0), fp8_e4m3_to_f32((uint8_t)b), b);
        expect_same(decode_format(b, 4, 3, 7, 0), fp8_e4m3_table[b], b);
    }
    assert_true(fp8_e4m3_to_f32(0x7e) == 448.0f);
}

// Encoding every representable value gives its own pattern back (NaNs: any NaN).
static void test_encode_round_trip(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 65536; b++) {
        float v = bf16_to_f32((uint16_t)b);
        if (isnan(v))
            assert_true(isnan(bf16_to_f32(f32_to_bf16(v))));
        else
            assert_int_equal(f32_to_bf16(v), b);
        v = f16_to_f32((uint16_t)b);
        if (isnan(v))
            assert_true(isnan(f16_to_f32(f32_to_f16(v))));
        else
            assert_int_equal(f32_to_f16(v), b);
    }
    for (uint32_t b = 0; b < 256; b++) {
        float v = fp8_e4m3_to_f32((uint8_t)b);
        if (isnan(v))
            assert_true(isnan(fp8_e4m3_to_f32(f32_to_fp8_e4m3(v))));
        else
            assert_int_equal(f32_to_fp8_e4m3(v), b);
    }
}

// Brute force: the nearest finite value among all codes of the format, ties to the even code;
// past the largest finite value: infinity (bf16, f16: IEEE overflow when at least halfway to
// the next power) or saturation (fp8).
static uint32_t nearest_code(double x, const float *values, uint32_t count)
{
    uint32_t best = UINT32_MAX;
    double best_distance = INFINITY;
    for (uint32_t b = 0; b < count; b++) {
        if (isnan(values[b]) || isinf(values[b]) || !signbit(values[b]) != !signbit(x))
            continue;
        double d = fabs((double)values[b] - x);
        if (d < best_distance || (d == best_distance && (b & 1) == 0)) {
            best_distance = d;
            best = b;
        }
    }
    return best;
}

static uint64_t rng = 12345;
static uint32_t next_u32(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static void test_rounding_against_brute_force(void **state)
{
    (void)state;
    static float bf16_values[65536], f16_values[65536], fp8_values[256];
    for (uint32_t b = 0; b < 65536; b++) {
        bf16_values[b] = bf16_to_f32((uint16_t)b);
        f16_values[b] = f16_to_f32((uint16_t)b);
    }
    for (uint32_t b = 0; b < 256; b++)
        fp8_values[b] = fp8_e4m3_to_f32((uint8_t)b);

    for (int i = 0; i < 1200; i++) {
        // Random f32 bit patterns near the interesting ranges, and exact midpoints.
        uint32_t bits = next_u32();
        float x;
        if (i % 3 == 0) { // a midpoint between two neighbouring bf16 values
            uint16_t h = (uint16_t)(next_u32() & 0x7f3f);
            x = (float)(((double)bf16_to_f32(h) + bf16_to_f32((uint16_t)(h + 1))) / 2);
        } else {
            uint32_t exponent = 100 + next_u32() % 50; // 2^-27 .. 2^22
            bits = (bits & 0x807fffffu) | (exponent << 23);
            memcpy(&x, &bits, 4);
        }
        double xd = x;

        uint32_t want = nearest_code(xd, bf16_values, 65536);
        assert_int_equal(f32_to_bf16(x), want);

        if (fabs(xd) < 65520) { // below the f16 overflow threshold
            want = nearest_code(xd, f16_values, 65536);
            assert_int_equal(f32_to_f16(x), want);
        } else {
            assert_true(isinf(f16_to_f32(f32_to_f16(x))));
        }

        want = nearest_code(xd, fp8_values, 256);
        uint8_t got = f32_to_fp8_e4m3(x);
        if (fabs(xd) >= 448) // saturates
            assert_int_equal(got, (signbit(x) ? 0x80 : 0) | 0x7e);
        else if (got != want)
            fail_msg("fp8 of %.9g: got 0x%x, nearest 0x%x", xd, got, want);
    }
    // fp8 midpoints exactly: between 1.0 (0x38) and 1.125 (0x39) -> even (0x38); between 1.125
    // and 1.25 (0x3a) -> 0x3a.
    assert_int_equal(f32_to_fp8_e4m3(1.0625f), 0x38);
    assert_int_equal(f32_to_fp8_e4m3(1.1875f), 0x3a);
    assert_int_equal(f32_to_fp8_e4m3(-1000.0f), 0xfe);
    assert_int_equal(f32_to_fp8_e4m3(NAN) & 0x7f, 0x7f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_all_patterns),
        cmocka_unit_test(test_encode_round_trip),
        cmocka_unit_test(test_rounding_against_brute_force),
    };
    return cmocka_run_group_tests_name("engine_core_conversions", tests, NULL, NULL);
}
