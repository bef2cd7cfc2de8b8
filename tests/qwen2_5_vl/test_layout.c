// test_layout.c: properties of the layout functions on many grids (the exact values are held
// to transformers in test_fixtures.c) and their errors on malformed prompts.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "qwen2_5_vl_layout.h"

// For every grid: window_index is a permutation of the merged units that never mixes temporal
// groups, windows hold at most window^2 units, each window's units are a rectangle of the
// unit grid, and cu_window_seqlens is strictly increasing from 0 to all patches.
static void test_window_layout_properties(void **state)
{
    (void)state;
    for (int t = 1; t <= 3; t++)
        for (int h = 2; h <= 26; h += 2)
            for (int w = 2; w <= 30; w += 4)
                for (int window = 1; window <= 5; window++) {
                    struct qwen_grid grid = {t, h, w};
                    int64_t units = qwen_grid_merged_units(&grid, 2);
                    int64_t capacity = qwen_window_cu_capacity(&grid, 2, window);
                    int32_t *index = malloc((size_t)units * sizeof(int32_t));
                    int32_t *cu = malloc((size_t)capacity * sizeof(int32_t));
                    uint8_t *seen = calloc((size_t)units, 1);
                    int count = -1;
                    qwen_window_layout(&grid, 2, window, index, cu, &count);
                    assert_true(count >= 2 && count <= capacity);
                    assert_int_equal(cu[0], 0);
                    assert_int_equal(cu[count - 1], units * 4);
                    int64_t position = 0;
                    for (int k = 1; k < count; k++) {
                        int32_t size = (cu[k] - cu[k - 1]) / 4;
                        assert_true(size >= 1 && size <= window * window);
                        assert_int_equal((cu[k] - cu[k - 1]) % 4, 0);
                        int group = -1, min_y = 1 << 30, max_y = -1, min_x = 1 << 30, max_x = -1;
                        for (int u = 0; u < size; u++, position++) {
                            int32_t unit = index[position];
                            assert_true(unit >= 0 && unit < units);
                            assert_false(seen[unit]);
                            seen[unit] = 1;
                            int g = unit / (h / 2 * (w / 2)),
                                y = unit % (h / 2 * (w / 2)) / (w / 2), x = unit % (w / 2);
                            if (group < 0)
                                group = g;
                            assert_int_equal(g, group);
                            min_y = y < min_y ? y : min_y;
                            max_y = y > max_y ? y : max_y;
                            min_x = x < min_x ? x : min_x;
                            max_x = x > max_x ? x : max_x;
                        }
                        assert_int_equal((max_y - min_y + 1) * (max_x - min_x + 1), size);
                        assert_true(max_y - min_y < window && max_x - min_x < window);
                        assert_int_equal(min_y % window, 0);
                        assert_int_equal(min_x % window, 0);
                    }
                    assert_int_equal(position, units);
                    free(index);
                    free(cu);
                    free(seen);
                }
}

static void test_rotary_positions_and_frames(void **state)
{
    (void)state;
    struct qwen_grid grid = {2, 4, 6};
    int32_t row_col[2 * 48], cu[3];
    qwen_vision_rotary_positions(&grid, 2, row_col);
    // every (row, col) of the 4 x 6 grid exactly once per temporal group
    for (int t = 0; t < 2; t++) {
        int seen[4][6] = {{0}};
        for (int i = 0; i < 24; i++)
            seen[row_col[2 * (t * 24 + i)]][row_col[2 * (t * 24 + i) + 1]]++;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 6; c++)
                assert_int_equal(seen[r][c], 1);
    }
    // the 4 patches of a merged unit are consecutive and form a 2 x 2 square
    for (int u = 0; u < 12; u++) {
        const int32_t *p = row_col + 8 * u;
        assert_int_equal(p[0], p[2]);
        assert_int_equal(p[1] + 1, p[3]);
        assert_int_equal(p[0] + 1, p[4]);
        assert_int_equal(p[1], p[5]);
    }
    qwen_frame_cu_seqlens(&grid, cu);
    assert_int_equal(cu[0], 0);
    assert_int_equal(cu[1], 24);
    assert_int_equal(cu[2], 48);
}

static void test_rope_index_errors(void **state)
{
    (void)state;
    const int32_t video = 151656;
    struct qwen_grid grid = {1, 4, 4}; // 4 video tokens
    float spg = 1.0f;
    int32_t positions[3 * 16];
    int64_t delta;
    char err[256];
    // too few video tokens for the grid
    int32_t short_ids[6] = {1, 2, video, video, video, 3};
    assert_int_not_equal(qwen_rope_index(short_ids, 6, video, &grid, &spg, 1, 2, 2.0f, positions,
                                         &delta, err, sizeof(err)),
                         0);
    assert_non_null(strstr(err, "video"));
    // a video block but no grid
    int32_t ids[8] = {1, 2, video, video, video, video, 3, 4};
    assert_int_not_equal(qwen_rope_index(ids, 8, video, &grid, &spg, 0, 2, 2.0f, positions, &delta,
                                         err, sizeof(err)),
                         0);
    // a grid but no video block
    int32_t text[4] = {1, 2, 3, 4};
    assert_int_not_equal(qwen_rope_index(text, 4, video, &grid, &spg, 1, 2, 2.0f, positions, &delta,
                                         err, sizeof(err)),
                         0);
    // the right prompt: text 0,1; video at 2 + (row, col); text after at max + 1
    assert_int_equal(qwen_rope_index(ids, 8, video, &grid, &spg, 1, 2, 2.0f, positions, &delta, err,
                                     sizeof(err)),
                     0);
    assert_int_equal(positions[6], 4);      // t stream of the first text token after the video
    assert_int_equal(positions[8 + 5], 3);  // h of the last video token: 2 + row 1
    assert_int_equal(positions[16 + 4], 2); // w of the third video token: 2 + col 0
    assert_int_equal(delta, 6 - 8);         // last position 5, 8 tokens
    assert_int_equal(qwen_decode_position(8, delta), 6);
    // bad grids
    struct qwen_grid odd = {1, 3, 4}, empty = {0, 4, 4};
    assert_int_not_equal(qwen_grid_check(&odd, 2, err, sizeof(err)), 0);
    assert_int_not_equal(qwen_grid_check(&empty, 2, err, sizeof(err)), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_layout_properties),
        cmocka_unit_test(test_rotary_positions_and_frames),
        cmocka_unit_test(test_rope_index_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
