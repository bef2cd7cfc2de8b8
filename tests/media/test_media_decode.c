// Decode tests over the clips make_clips.py generated (argv[1] = its manifest.txt). Every
// expectation in the manifest comes from ffprobe/ffmpeg and sampling_reference.py, never from
// the code under test.
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "media.h"

enum case_kind { CASE_DECODE, CASE_ERROR, CASE_SURVIVE };

typedef struct test_case {
    enum case_kind kind;
    char *line; // owned copy; the fields below point into it
    char *name;
    char *clip_path;
    char *expectation; // decode: reference path; error: cause; survive: causes a|b|c
    char *rest;        // decode: expected values; error: LIMIT=VALUE...
} test_case;

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *file = fopen(path, "rb");
    if (!file)
        fail_msg("cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long length = ftell(file);
    fseek(file, 0, SEEK_SET);
    uint8_t *data = malloc(length > 0 ? (size_t)length : 1);
    assert_non_null(data);
    if (length > 0 && fread(data, 1, (size_t)length, file) != (size_t)length)
        fail_msg("cannot read %s", path);
    fclose(file);
    *size = (size_t)length;
    return data;
}

static int64_t next_int(char **cursor)
{
    char *end;
    long long value = strtoll(*cursor, &end, 10);
    if (end == *cursor)
        fail_msg("manifest: expected an integer at '%.20s'", *cursor);
    *cursor = end;
    return value;
}

static double next_double(char **cursor)
{
    char *end;
    double value = strtod(*cursor, &end);
    if (end == *cursor)
        fail_msg("manifest: expected a number at '%.20s'", *cursor);
    *cursor = end;
    return value;
}

static media_clip *decode_or_fail(const char *name, const uint8_t *data, size_t size,
                                  const media_sampling *sampling)
{
    media_limits limits;
    media_limits_default(&limits);
    media_clip *clip = NULL;
    char err[512] = "";
    enum media_error error =
        media_decode_clip(data, size, sampling, &limits, &clip, err, sizeof(err));
    if (error != MEDIA_OK)
        fail_msg("%s: %s", name, err);
    assert_non_null(clip);
    return clip;
}

static void compare_pixels(const char *name, const media_clip *clip, const uint8_t *reference,
                           size_t reference_size)
{
    if (reference_size != clip->rgb_bytes)
        fail_msg("%s: %zu RGB bytes, reference has %zu", name, clip->rgb_bytes, reference_size);
    size_t frame_bytes = (size_t)clip->width * clip->height * 3;
    for (int i = 0; i < clip->sample_count; i++) {
        const uint8_t *got = clip->rgb + (size_t)i * frame_bytes;
        const uint8_t *want = reference + (size_t)i * frame_bytes;
        if (memcmp(got, want, frame_bytes) == 0)
            continue;
        size_t differing = 0;
        int largest = 0;
        for (size_t b = 0; b < frame_bytes; b++) {
            int difference = abs((int)got[b] - (int)want[b]);
            differing += difference != 0;
            largest = difference > largest ? difference : largest;
        }
        fail_msg("%s: sample %d (frame %lld): %zu of %zu bytes differ, by up to %d", name, i,
                 (long long)clip->frame_indices[i], differing, frame_bytes, largest);
    }
}

static void run_decode_case(const test_case *test)
{
    char *cursor = test->rest;
    int width = (int)next_int(&cursor), height = (int)next_int(&cursor);
    int64_t frames = next_int(&cursor);
    media_sampling sampling;
    media_sampling_default(&sampling);
    sampling.span_start_s = next_double(&cursor);
    sampling.span_end_s = next_double(&cursor);
    int window_count = (int)next_int(&cursor);

    size_t size = 0, reference_size = 0;
    uint8_t *data = read_file(test->clip_path, &size);
    uint8_t *reference = read_file(test->expectation, &reference_size);
    media_clip *clip = decode_or_fail(test->name, data, size, &sampling);

    assert_int_equal(clip->width, width);
    assert_int_equal(clip->height, height);
    assert_int_equal(clip->source_frames, frames);
    assert_int_equal(clip->window_count, window_count);
    for (int w = 0; w < window_count; w++) {
        assert_int_equal(clip->windows[w].start_frame, next_int(&cursor));
        assert_int_equal(clip->windows[w].end_frame, next_int(&cursor));
        assert_int_equal(clip->windows[w].sample_count, next_int(&cursor));
    }
    int samples = (int)next_int(&cursor);
    assert_int_equal(clip->sample_count, samples);
    for (int i = 0; i < samples; i++)
        assert_int_equal(clip->frame_indices[i], next_int(&cursor));
    for (int i = 0; i < samples; i++) {
        double expected = next_double(&cursor);
        // ffprobe prints pts_time with 6 decimals.
        if (clip->timestamps_s[i] < expected - 2e-6 || clip->timestamps_s[i] > expected + 2e-6)
            fail_msg("%s: sample %d at %.6f s, reference %.6f s", test->name, i,
                     clip->timestamps_s[i], expected);
    }
    // Packets before the keyframe a span starts from are not decoded (expected count from
    // ffprobe's packet list).
    assert_int_equal(clip->packets_before_start, next_int(&cursor));
    compare_pixels(test->name, clip, reference, reference_size);
    const media_window *last = &clip->windows[window_count - 1];
    assert_ptr_equal(media_clip_frame_rgb(clip, last->first_sample + last->sample_count - 1),
                     clip->rgb + clip->rgb_bytes - (size_t)clip->width * clip->height * 3);
    assert_null(media_clip_frame_rgb(clip, clip->sample_count));

    // The same frames single-threaded and without skipping non-reference frames: skipping
    // must not change a single byte.
    media_sampling plain = sampling;
    plain.decode_threads = 1;
    plain.skip_nonref_frames = false;
    media_clip *plain_clip = decode_or_fail(test->name, data, size, &plain);
    assert_int_equal(plain_clip->packets_skipped_nonref, 0);
    // x264's and x265's B-frames include non-reference ones: the skip path must have been
    // taken, or the comparison above proves nothing. HEVC with several temporal layers must
    // never skip (a higher layer may reference those pictures).
    if (strstr(test->name, "temporal_layers"))
        assert_int_equal(clip->packets_skipped_nonref, 0);
    else if (strcmp(clip->codec_name, "h264") == 0 || strcmp(clip->codec_name, "hevc") == 0)
        assert_true(clip->packets_skipped_nonref > 0);
    assert_int_equal(plain_clip->rgb_bytes, clip->rgb_bytes);
    assert_memory_equal(plain_clip->rgb, clip->rgb, clip->rgb_bytes);
    if (clip->rotation_degrees != 0) {
        // Without rotation the frames come out as coded, as Curator/PyAV see them.
        media_sampling unrotated = sampling;
        unrotated.apply_rotation = false;
        media_clip *raw = decode_or_fail(test->name, data, size, &unrotated);
        assert_int_equal(raw->rotation_degrees, 0);
        assert_int_equal(raw->width, clip->coded_width);
        assert_int_equal(raw->height, clip->coded_height);
        assert_int_equal(raw->width, clip->height);
        assert_memory_not_equal(raw->rgb, clip->rgb, raw->rgb_bytes);
        media_clip_free(raw);
    }
    print_message("%s: %s %dx%d, %d samples, %lld packets not decoded before the start, %lld "
                  "sent, %lld non-reference skipped\n",
                  test->name, clip->codec_name, clip->width, clip->height, clip->sample_count,
                  (long long)clip->packets_before_start, (long long)clip->packets_sent,
                  (long long)clip->packets_skipped_nonref);
    media_clip_free(plain_clip);
    media_clip_free(clip);
    free(reference);
    free(data);
}

static void apply_limit(media_limits *limits, const char *assignment)
{
    char key[64];
    double value;
    if (sscanf(assignment, "%63[^=]=%lf", key, &value) != 2)
        fail_msg("manifest: bad limit '%s'", assignment);
    if (strcmp(key, "max_input_bytes") == 0)
        limits->max_input_bytes = (size_t)value;
    else if (strcmp(key, "max_width") == 0)
        limits->max_width = (int)value;
    else if (strcmp(key, "max_pixels_per_frame") == 0)
        limits->max_pixels_per_frame = (int64_t)value;
    else if (strcmp(key, "max_duration_s") == 0)
        limits->max_duration_s = value;
    else if (strcmp(key, "max_source_frames") == 0)
        limits->max_source_frames = (int64_t)value;
    else if (strcmp(key, "max_sampled_frames_per_window") == 0)
        limits->max_sampled_frames_per_window = (int)value;
    else if (strcmp(key, "max_decoded_bytes") == 0)
        limits->max_decoded_bytes = (size_t)value;
    else
        fail_msg("manifest: unknown limit '%s'", key);
}

static void run_error_case(const test_case *test)
{
    media_limits limits;
    media_limits_default(&limits);
    char *saveptr = NULL;
    for (char *token = strtok_r(test->rest, " \n", &saveptr); token;
         token = strtok_r(NULL, " \n", &saveptr))
        apply_limit(&limits, token);
    media_sampling sampling;
    media_sampling_default(&sampling);
    size_t size = 0;
    uint8_t *data = read_file(test->clip_path, &size);
    media_clip *clip = NULL;
    char err[512] = "";
    enum media_error error =
        media_decode_clip(data, size, &sampling, &limits, &clip, err, sizeof(err));
    if (strcmp(media_error_name(error), test->expectation) != 0)
        fail_msg("%s: got %s (%s), expected %s", test->name, media_error_name(error), err,
                 test->expectation);
    assert_null(clip);
    // The message starts with the cause's stable name and says more after it.
    assert_true(strncmp(err, test->expectation, strlen(test->expectation)) == 0);
    assert_true(strlen(err) > strlen(test->expectation) + 4);
    print_message("%s: %s\n", test->name, err);
    free(data);
}

static void run_survive_case(const test_case *test)
{
    media_limits limits;
    media_limits_default(&limits);
    media_sampling sampling;
    media_sampling_default(&sampling);
    size_t size = 0;
    uint8_t *data = read_file(test->clip_path, &size);
    media_clip *clip = NULL;
    char err[512] = "";
    enum media_error error =
        media_decode_clip(data, size, &sampling, &limits, &clip, err, sizeof(err));
    const char *name = media_error_name(error);
    char allowed[256];
    snprintf(allowed, sizeof(allowed), "|%s|", test->expectation);
    char wanted[64];
    snprintf(wanted, sizeof(wanted), "|%s|", name);
    if (!strstr(allowed, wanted))
        fail_msg("%s: got %s (%s), expected one of %s", test->name, name, err, test->expectation);
    assert_true((error == MEDIA_OK) == (clip != NULL));
    if (clip) {
        assert_true(clip->sample_count > 0);
        assert_int_equal(clip->rgb_bytes,
                         (size_t)clip->sample_count * clip->width * clip->height * 3);
    }
    print_message("%s: %s %s\n", test->name, name, err);
    media_clip_free(clip);
    free(data);
}

static void run_case(void **state)
{
    const test_case *test = *state;
    switch (test->kind) {
    case CASE_DECODE:
        run_decode_case(test);
        break;
    case CASE_ERROR:
        run_error_case(test);
        break;
    case CASE_SURVIVE:
        run_survive_case(test);
        break;
    }
}

typedef struct concurrent_decode {
    const uint8_t *data;
    size_t size;
    media_clip *clip;
    enum media_error error;
} concurrent_decode;

static void *decode_thread(void *argument)
{
    concurrent_decode *job = argument;
    media_sampling sampling;
    media_sampling_default(&sampling);
    sampling.decode_threads = 1;
    media_limits limits;
    media_limits_default(&limits);
    char err[256];
    job->error =
        media_decode_clip(job->data, job->size, &sampling, &limits, &job->clip, err, sizeof(err));
    return NULL;
}

// The daemon decodes clips on a pool of threads: concurrent decodes of the same bytes must
// not interfere (no global state in media/).
static void run_concurrent_case(void **state)
{
    const test_case *test = *state;
    size_t size = 0;
    uint8_t *data = read_file(test->clip_path, &size);
    enum { THREADS = 4 };
    concurrent_decode jobs[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (concurrent_decode){.data = data, .size = size};
        assert_int_equal(pthread_create(&threads[i], NULL, decode_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(jobs[i].error, MEDIA_OK);
        assert_int_equal(jobs[i].clip->rgb_bytes, jobs[0].clip->rgb_bytes);
        assert_memory_equal(jobs[i].clip->rgb, jobs[0].clip->rgb, jobs[0].clip->rgb_bytes);
    }
    for (int i = 0; i < THREADS; i++)
        media_clip_free(jobs[i].clip);
    free(data);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    media_limits limits;
    media_limits_default(&limits);
    media_sampling sampling;
    media_sampling_default(&sampling);
    media_clip *clip = NULL;
    char err[256];
    const uint8_t byte = 0;
    sampling.sampling_fps = 0;
    assert_int_equal(media_decode_clip(&byte, 1, &sampling, &limits, &clip, err, sizeof(err)),
                     MEDIA_ERR_INVALID_ARGUMENT);
    media_sampling_default(&sampling);
    sampling.span_start_s = 5;
    sampling.span_end_s = 2;
    assert_int_equal(media_decode_clip(&byte, 1, &sampling, &limits, &clip, err, sizeof(err)),
                     MEDIA_ERR_INVALID_ARGUMENT);
    media_sampling_default(&sampling);
    assert_int_equal(media_decode_clip(NULL, 0, &sampling, &limits, &clip, err, sizeof(err)),
                     MEDIA_ERR_EMPTY);
    assert_null(clip);
    // A tiny error buffer still gets a terminated message.
    char tiny[4] = "xxx";
    assert_int_equal(media_decode_clip(NULL, 0, &sampling, &limits, &clip, tiny, sizeof(tiny)),
                     MEDIA_ERR_EMPTY);
    assert_int_equal(strlen(tiny), 3);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MANIFEST\n", argv[0]);
        return 2;
    }
    media_set_ffmpeg_log_quiet(true);
    size_t size = 0;
    char *manifest = (char *)read_file(argv[1], &size);
    manifest = realloc(manifest, size + 1);
    manifest[size] = '\0';

    int capacity = 128, count = 0;
    test_case *cases = calloc((size_t)capacity, sizeof(*cases));
    struct CMUnitTest *tests = calloc((size_t)capacity + 1, sizeof(*tests));
    tests[count++] = (struct CMUnitTest)cmocka_unit_test(test_invalid_arguments);
    char *saveptr = NULL;
    for (char *line = strtok_r(manifest, "\n", &saveptr); line && count < capacity;
         line = strtok_r(NULL, "\n", &saveptr)) {
        test_case *test = &cases[count];
        test->line = line;
        char *fields = NULL;
        char *kind = strtok_r(line, " ", &fields);
        test->name = strtok_r(NULL, " ", &fields);
        test->clip_path = strtok_r(NULL, " ", &fields);
        test->expectation = strtok_r(NULL, " ", &fields);
        test->rest = fields ? fields : "";
        if (!kind || !test->name || !test->clip_path || !test->expectation) {
            fprintf(stderr, "manifest: bad line\n");
            return 2;
        }
        test->kind = strcmp(kind, "decode") == 0  ? CASE_DECODE
                     : strcmp(kind, "error") == 0 ? CASE_ERROR
                                                  : CASE_SURVIVE;
        tests[count] =
            (struct CMUnitTest){.name = test->name, .test_func = run_case, .initial_state = test};
        count++;
    }
    for (int i = 1; i < count && count < capacity; i++)
        if (cases[i].kind == CASE_DECODE) {
            tests[count++] = (struct CMUnitTest){.name = "concurrent_decodes",
                                                 .test_func = run_concurrent_case,
                                                 .initial_state = &cases[i]};
            break;
        }
    if (count < 30) {
        fprintf(stderr, "manifest %s: only %d cases\n", argv[1], count - 1);
        return 2;
    }
    int failures = _cmocka_run_group_tests("media_decode", tests, (size_t)count, NULL, NULL);
    free(tests);
    free(cases);
    free(manifest);
    return failures;
}
