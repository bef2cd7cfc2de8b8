/* Encode speed of the C tokenizer on a corpus (a JSON list of strings, see
 * tests/tokenizer/gen_corpus.py); single-threaded. Compare with bench/tokenizer_bench.py.
 *
 * Usage: tokenizer_bench TOKENIZER.json CORPUS.json [REPEATS]
 * Times are CPU seconds of the process (single thread).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tokenizer.h"

/* CPU time of this process: less disturbed than wall time on a shared machine. */
static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER.json CORPUS.json [REPEATS]\n", argv[0]);
        return 2;
    }
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    if (repeats < 1)
        repeats = 1;
    char err[512];
    json_error_t json_error;
    json_t *corpus = json_load_file(argv[2], JSON_ALLOW_NUL, &json_error);
    if (!json_is_array(corpus)) {
        fprintf(stderr, "%s: %s\n", argv[2], json_error.text);
        return 1;
    }
    double start = now_seconds();
    clipcap_tokenizer *tokenizer;
    if (clipcap_tokenizer_load(argv[1], NULL, &tokenizer, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("load: %.3f s\n", now_seconds() - start);
    size_t bytes = 0, tokens = 0, index;
    double *pass_seconds = calloc((size_t)repeats, sizeof(double));
    json_t *item;
    json_array_foreach(corpus, index, item) bytes += json_string_length(item);
    for (int r = 0; r < repeats; r++) {
        clipcap_token_list ids = {0};
        start = now_seconds();
        json_array_foreach(corpus, index, item)
        {
            ids.count = 0;
            if (clipcap_tokenizer_encode(tokenizer, json_string_value(item),
                                         json_string_length(item), true, &ids, err,
                                         sizeof(err)) != 0) {
                fprintf(stderr, "line %zu: %s\n", index, err);
                return 1;
            }
            tokens += ids.count;
        }
        double seconds = now_seconds() - start;
        pass_seconds[r] = seconds;
        printf("pass %d%s: %zu lines, %zu bytes in %.4f s: %.2f MB/s, %.0f lines/s\n", r + 1,
               r == 0 ? " (cold BPE cache)" : "", json_array_size(corpus), bytes, seconds,
               (double)bytes / seconds / 1e6, (double)json_array_size(corpus) / seconds);
        clipcap_token_list_free(&ids);
    }
    printf("tokens per pass: %zu\n", tokens / (size_t)repeats);
    qsort(pass_seconds, (size_t)repeats, sizeof(double), compare_doubles);
    double median = pass_seconds[repeats / 2];
    printf("median pass: %.4f s: %.2f MB/s, %.0f lines/s\n", median, (double)bytes / median / 1e6,
           (double)json_array_size(corpus) / median);
    free(pass_seconds);
    clipcap_tokenizer_free(tokenizer);
    json_decref(corpus);
    return 0;
}
