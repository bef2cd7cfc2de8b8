// Sampling plan tests: hand-checked vectors, then every vector the independent Python
// reference (sampling_reference.py, run by ctest as a fixture) wrote to the file in argv[1].
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "media.h"

static const char *vectors_path;

static void test_ten_seconds_at_30_fps_gives_one_window_of_20(void **state)
{
    (void)state;
    media_frame_range windows[4];
    assert_int_equal(media_compute_windows(300, 256, 128, windows, 4), 1);
    assert_int_equal(windows[0].start, 0);
    assert_int_equal(windows[0].end, 299);
    assert_int_equal(media_smart_nframes(2.0, 300, 30.0), 20);
    // 299 / 19 = 15.7368...: k * 15.7368 rounded, worked out by hand in docs/sampling.md.
    const int64_t expected[20] = {0,   16,  31,  47,  63,  79,  94,  110, 126, 142,
                                  157, 173, 189, 205, 220, 236, 252, 268, 283, 299};
    int64_t indices[20];
    media_linspace_indices(0, 299, 20, indices);
    for (int i = 0; i < 20; i++)
        assert_int_equal(indices[i], expected[i]);
}

static void test_windows_by_hand(void **state)
{
    (void)state;
    media_frame_range w[8];
    assert_int_equal(media_compute_windows(3, 256, 128, w, 8), 0); // under 4 frames
    assert_int_equal(media_compute_windows(4, 256, 128, w, 8), 1);
    assert_int_equal(w[0].end, 3);
    assert_int_equal(media_compute_windows(256, 256, 128, w, 8), 1);
    assert_int_equal(w[0].end, 255);
    // 383 = 256 + 127: remainder under the threshold merges into the first window.
    assert_int_equal(media_compute_windows(383, 256, 128, w, 8), 1);
    assert_int_equal(w[0].end, 382);
    // 384 = 256 + 128: the remainder becomes its own window.
    assert_int_equal(media_compute_windows(384, 256, 128, w, 8), 2);
    assert_int_equal(w[1].start, 256);
    assert_int_equal(w[1].end, 383);
    // 1200 at 60 fps: four full windows and a 176-frame one.
    assert_int_equal(media_compute_windows(1200, 256, 128, w, 8), 5);
    assert_int_equal(w[4].start, 1024);
    assert_int_equal(w[4].end, 1199);
    // Only max_windows are written, the count is still complete.
    assert_int_equal(media_compute_windows(1200, 256, 128, w, 2), 5);
    assert_int_equal(media_compute_windows(100, 0, 128, w, 8), -1);
    assert_int_equal(media_compute_windows(100, 256, 0, w, 8), -1);
}

static void test_smart_nframes_by_hand(void **state)
{
    (void)state;
    assert_int_equal(media_smart_nframes(2.0, 256, 30.0), 18);  // 17.07 -> round(8.53)*2
    assert_int_equal(media_smart_nframes(2.0, 176, 60.0), 6);   // 5.87 -> round(2.93)*2
    assert_int_equal(media_smart_nframes(2.0, 4, 30.0), 4);     // clamped up to 4
    assert_int_equal(media_smart_nframes(2.0, 20, 2.0), 20);    // every frame
    assert_int_equal(media_smart_nframes(2.0, 5000, 1.0), 768); // clamped to 768
    // 10 frames at 4 fps: 5 -> 5/2 = 2.5 rounds half to even -> 2 -> 4 frames.
    assert_int_equal(media_smart_nframes(2.0, 10, 4.0), 4);
    // 14 frames at 4 fps: 7 -> 3.5 rounds to 4 -> 8 frames.
    assert_int_equal(media_smart_nframes(2.0, 14, 4.0), 8);
    assert_int_equal(media_smart_nframes(2.0, 3, 30.0), 2);
    assert_int_equal(media_smart_nframes(2.0, 1, 30.0), -1); // Curator raises
    assert_int_equal(media_smart_nframes(2.0, 100, 0.0), -1);
}

static int64_t next_int(char **cursor)
{
    char *end;
    long long value = strtoll(*cursor, &end, 10);
    assert_true(end != *cursor);
    *cursor = end;
    return value;
}

static double next_double(char **cursor)
{
    char *end;
    double value = strtod(*cursor, &end);
    assert_true(end != *cursor);
    *cursor = end;
    return value;
}

static void check_plan_line(char *cursor, int line_number)
{
    int64_t total = next_int(&cursor);
    int window_size = (int)next_int(&cursor);
    int threshold = (int)next_int(&cursor);
    double video_fps = next_double(&cursor);
    double sampling_fps = next_double(&cursor);
    int64_t expected_windows = next_int(&cursor);
    media_frame_range windows[1024];
    int64_t count = media_compute_windows(total, window_size, threshold, windows, 1024);
    if (count != expected_windows)
        fail_msg("line %d: %lld frames: %lld windows, reference %lld", line_number,
                 (long long)total, (long long)count, (long long)expected_windows);
    for (int64_t w = 0; w < count; w++) {
        int64_t start = next_int(&cursor), end = next_int(&cursor);
        int expected_n = (int)next_int(&cursor);
        assert_int_equal(windows[w].start, start);
        assert_int_equal(windows[w].end, end);
        int n = media_smart_nframes(sampling_fps, end - start + 1, video_fps);
        if (n != expected_n)
            fail_msg("line %d: window %lld..%lld at %.17g fps: %d frames, reference %d",
                     line_number, (long long)start, (long long)end, video_fps, n, expected_n);
        if (n <= 0)
            continue;
        int64_t *indices = calloc((size_t)n, sizeof(*indices));
        assert_non_null(indices);
        media_linspace_indices(start, end, n, indices);
        for (int i = 0; i < n; i++) {
            int64_t expected = next_int(&cursor);
            int64_t got = indices[i];
            if (got != expected) {
                free(indices);
                fail_msg("line %d: window %lld..%lld sample %d: index %lld, reference %lld",
                         line_number, (long long)start, (long long)end, i, (long long)got,
                         (long long)expected);
            }
        }
        free(indices);
    }
}

static void test_against_python_reference(void **state)
{
    (void)state;
    FILE *file = fopen(vectors_path, "r");
    if (!file)
        fail_msg("cannot open reference vectors %s", vectors_path);
    char *line = NULL;
    size_t capacity = 0;
    int line_number = 0, plans = 0, nframes_checks = 0;
    while (getline(&line, &capacity, file) > 0) {
        line_number++;
        char *cursor = line;
        if (strncmp(line, "nframes ", 8) == 0) {
            cursor += 8;
            double sampling_fps = next_double(&cursor);
            int64_t total = next_int(&cursor);
            double video_fps = next_double(&cursor);
            int expected = (int)next_int(&cursor);
            int got = total > 0 ? media_smart_nframes(sampling_fps, total, video_fps) : -1;
            if (got != expected)
                fail_msg("line %d: smart_nframes(%g, %lld, %.17g) = %d, reference %d", line_number,
                         sampling_fps, (long long)total, video_fps, got, expected);
            nframes_checks++;
        } else if (strncmp(line, "plan ", 5) == 0) {
            check_plan_line(cursor + 5, line_number);
            plans++;
        } else {
            fail_msg("line %d: unknown vector", line_number);
        }
    }
    free(line);
    fclose(file);
    // The reference writes thousands of vectors; an empty file must not pass.
    assert_true(plans > 1000);
    assert_true(nframes_checks > 1000);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s VECTORS_FILE\n", argv[0]);
        return 2;
    }
    vectors_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ten_seconds_at_30_fps_gives_one_window_of_20),
        cmocka_unit_test(test_windows_by_hand),
        cmocka_unit_test(test_smart_nframes_by_hand),
        cmocka_unit_test(test_against_python_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
