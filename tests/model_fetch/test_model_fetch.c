// test_model_fetch.c: model_fetch and `clipcap model` against hf_server.py, a local stand-in
// for the Hugging Face Hub. Expected sizes and sha256s come from the server script
// (hashlib), not from the code under test.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "commands.h"
#include "model_fetch.h"
#include "model_manifest.h"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *env(const char *name)
{
    const char *value = getenv(name);
    if (!value) {
        fprintf(stderr, "%s is not set: run under hf_server.py\n", name);
        exit(1);
    }
    return value;
}

// ---- talking to the fixture --------------------------------------------------------------------

static size_t collect(char *chunk, size_t one, size_t count, void *user)
{
    char **text = user;
    size_t old = *text ? strlen(*text) : 0, n = one * count;
    char *grown = realloc(*text, old + n + 1);
    assert_non_null(grown);
    memcpy(grown + old, chunk, n);
    grown[old + n] = '\0';
    *text = grown;
    return n;
}

// POST body to the fixture (body NULL: GET); returns the response text (malloc'd).
static char *fixture_request(const char *path, const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", env("CLIPCAP_TEST_HF_ENDPOINT"), path);
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    char *text = NULL;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &text);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    if (body)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    assert_int_equal(curl_easy_perform(curl), CURLE_OK);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return text ? text : strdup("");
}

static void fixture_control(const char *path, const char *body)
{
    free(fixture_request(path, body));
}

static json_t *fixture_log(void)
{
    char *text = fixture_request("/_log", NULL);
    json_t *log = json_loads(text, 0, NULL);
    free(text);
    assert_true(json_is_array(log));
    return log;
}

// Requests in the log whose path ends with suffix; *ranged counts those with a Range header,
// and range_out receives the last Range seen.
static int count_requests(json_t *log, const char *suffix, int *ranged, char *range_out,
                          size_t range_size)
{
    int count = 0;
    if (ranged)
        *ranged = 0;
    size_t index;
    json_t *entry;
    json_array_foreach(log, index, entry)
    {
        const char *path = json_string_value(json_object_get(entry, "path"));
        size_t len = strlen(path), suffix_len = strlen(suffix);
        if (len < suffix_len || strcmp(path + len - suffix_len, suffix) != 0)
            continue;
        count++;
        const char *range = json_string_value(json_object_get(entry, "range"));
        if (range && ranged) {
            (*ranged)++;
            if (range_out)
                snprintf(range_out, range_size, "%s", range);
        }
    }
    return count;
}

static json_t *expected(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/expected.json", env("CLIPCAP_TEST_HF_DATA"));
    json_t *root = json_load_file(path, 0, NULL);
    assert_non_null(root);
    return root;
}

// Sum of the repository's file sizes, from expected.json.
static uint64_t expected_total_bytes(void)
{
    json_t *want = expected();
    uint64_t total = 0;
    const char *key;
    json_t *value;
    json_object_foreach(json_object_get(want, "files"), key, value)
    {
        total += (uint64_t)json_integer_value(json_object_get(value, "size"));
    }
    json_decref(want);
    return total;
}

// ---- helpers -----------------------------------------------------------------------------------

static char *make_dir(void)
{
    char *dir = strdup("/tmp/clipcap-model-fetch-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void remove_tree(const char *path)
{
    DIR *dir = opendir(path);
    if (!dir) {
        unlink(path);
        return;
    }
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char child[1024];
        snprintf(child, sizeof child, "%s/%s", path, entry->d_name);
        remove_tree(child);
    }
    closedir(dir);
    rmdir(path);
}

static void test_options(struct model_fetch_options *options, const char *dir)
{
    model_fetch_options_defaults(options);
    options->variant = "qwen2.5";
    options->dir = dir;
    options->endpoint = env("CLIPCAP_TEST_HF_ENDPOINT");
    options->token = "";
    options->max_attempts = 3;
    options->backoff_base_ms = 10;
    options->low_speed_seconds = 5;
}

static bool file_equals(const char *a, const char *b)
{
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb)
            same = false;
        if (ca == EOF || cb == EOF)
            break;
    }
    if (fa)
        fclose(fa);
    if (fb)
        fclose(fb);
    return same;
}

static bool exists(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

// The directory holds every file byte for byte, and the manifest agrees with expected.json.
static void assert_complete(const char *dir)
{
    json_t *want = expected();
    json_t *files = json_object_get(want, "files");
    struct model_manifest manifest;
    char err[512];
    if (model_manifest_read(dir, &manifest, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(manifest.variant, "qwen2.5");
    assert_string_equal(manifest.hf_model_id, "Qwen/Qwen2.5-VL-7B-Instruct");
    assert_string_equal(manifest.revision, json_string_value(json_object_get(want, "revision")));
    assert_int_equal(strncmp(manifest.revision, "cc59489", 7), 0);
    assert_string_equal(manifest.requested_revision, "cc59489");
    assert_string_equal(manifest.weights_sha256,
                        json_string_value(json_object_get(want, "weights_sha256")));
    assert_int_equal(manifest.file_count, json_object_size(files));
    for (size_t i = 0; i < manifest.file_count; i++) {
        const struct model_manifest_file *file = &manifest.files[i];
        json_t *entry = json_object_get(files, file->path);
        assert_non_null(entry);
        assert_int_equal(file->size, json_integer_value(json_object_get(entry, "size")));
        assert_string_equal(file->sha256, json_string_value(json_object_get(entry, "sha256")));
        assert_int_equal(file->lfs, json_is_true(json_object_get(entry, "lfs")));
        char got[1024], reference[1024];
        snprintf(got, sizeof got, "%s/%s", dir, file->path);
        snprintf(reference, sizeof reference, "%s/files/%s", env("CLIPCAP_TEST_HF_DATA"),
                 file->path);
        assert_true(file_equals(got, reference));
        char part[1100];
        snprintf(part, sizeof part, "%s.part", got);
        assert_int_not_equal(access(part, F_OK), 0); // no leftovers
    }
    model_manifest_free(&manifest);
    json_decref(want);
}

static int setup(void **state)
{
    (void)state;
    fixture_control("/_reset", "{}");
    unsetenv("HF_TOKEN");
    unsetenv("HF_HUB_OFFLINE");
    return 0;
}

// ---- tests -------------------------------------------------------------------------------------

static void model_fetch_full_fetch(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct model_fetch_options options;
    test_options(&options, dir);
    struct model_fetch_stats stats;
    char err[2048];
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_complete(dir);
    assert_int_equal(stats.files_total, 5);
    assert_int_equal(stats.files_downloaded, 5);
    assert_int_equal(stats.files_reused, 0);
    assert_int_equal(stats.resumed_transfers, 0);
    assert_false(stats.from_complete_dir);
    assert_int_equal(stats.bytes_downloaded, expected_total_bytes());

    json_t *log = fixture_log();
    // The short revision was resolved, the tree was read in pages, LFS files were redirected.
    assert_int_equal(count_requests(log, "/revision/cc59489", NULL, NULL, 0), 1);
    assert_int_equal(count_requests(log,
                                    "/tree/"
                                    "cc59489",
                                    NULL, NULL, 0),
                     0);
    int tree_pages = 0;
    size_t index;
    json_t *entry;
    json_array_foreach(log, index, entry)
    {
        if (strstr(json_string_value(json_object_get(entry, "path")), "/tree/"))
            tree_pages++;
    }
    assert_int_equal(tree_pages, 3); // 7 entries, 3 per page
    assert_int_equal(count_requests(log, "model-00001-of-00002.safetensors", NULL, NULL, 0), 1);
    assert_int_equal(count_requests(log, "sub/dir/preprocessor_config.json", NULL, NULL, 0), 1);
    int cdn = 0;
    json_array_foreach(log, index, entry)
    {
        if (strncmp(json_string_value(json_object_get(entry, "path")), "/cdn/", 5) == 0)
            cdn++;
    }
    assert_int_equal(cdn, 2);
    json_decref(log);

    // A second run finds the directory complete and makes no request.
    fixture_control("/_reset", "{}");
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(stats.from_complete_dir);
    log = fixture_log();
    assert_int_equal(json_array_size(log), 0);
    json_decref(log);
    remove_tree(dir);
    free(dir);
}

static void model_fetch_resumes_dropped_transfer(void **state)
{
    (void)state;
    char *dir = make_dir();
    fixture_control("/_control",
                    "{\"drop\": {\"path\": \"model-00001-of-00002.safetensors\", \"times\": 1}}");
    struct model_fetch_options options;
    test_options(&options, dir);
    struct model_fetch_stats stats;
    char err[2048];
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_complete(dir);
    assert_int_equal(stats.resumed_transfers, 1);
    // Each byte crossed the wire once: the second request asked only for the rest.
    assert_int_equal(stats.bytes_downloaded, expected_total_bytes());
    json_t *log = fixture_log();
    int ranged = 0;
    char range[64] = "";
    // Two resolve requests (each redirected to the CDN); the second asked for the rest.
    assert_int_equal(
        count_requests(log, "model-00001-of-00002.safetensors", &ranged, range, sizeof range), 2);
    assert_int_equal(ranged, 1);
    char want[64];
    snprintf(want, sizeof want, "bytes=%d-", (3 * 1024 * 1024 + 17) / 2);
    assert_string_equal(range, want);
    json_decref(log);
    remove_tree(dir);
    free(dir);
}

static void model_fetch_resumes_across_runs(void **state)
{
    (void)state;
    char *dir = make_dir();
    fixture_control("/_control",
                    "{\"drop\": {\"path\": \"model-00001-of-00002.safetensors\", \"times\": 1}}");
    struct model_fetch_options options;
    test_options(&options, dir);
    options.max_attempts = 1;
    char err[2048];
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "model-00001-of-00002.safetensors"));
    char part[1024];
    snprintf(part, sizeof part, "%s/model-00001-of-00002.safetensors.part", dir);
    struct stat st;
    assert_int_equal(stat(part, &st), 0);
    assert_int_equal(st.st_size, (3 * 1024 * 1024 + 17) / 2);
    assert_false(exists(dir, MODEL_MANIFEST_FILENAME));

    fixture_control("/_reset", "{}");
    struct model_fetch_stats stats;
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_complete(dir);
    assert_int_equal(stats.resumed_transfers, 1);
    assert_int_equal(stats.files_reused, 1); // config.json sorts first and was complete
    json_t *log = fixture_log();
    int ranged = 0;
    char range[64] = "";
    count_requests(log, "model-00001-of-00002.safetensors", &ranged, range, sizeof range);
    assert_int_equal(ranged, 1);
    char want[64];
    snprintf(want, sizeof want, "bytes=%d-", (3 * 1024 * 1024 + 17) / 2);
    assert_string_equal(range, want);
    json_decref(log);
    remove_tree(dir);
    free(dir);
}

static void model_fetch_checksum_mismatch_fails_loudly(void **state)
{
    (void)state;
    char *dir = make_dir();
    fixture_control("/_control", "{\"corrupt\": \"model-00002-of-00002.safetensors\"}");
    struct model_fetch_options options;
    test_options(&options, dir);
    char err[2048];
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    json_t *want = expected();
    const char *oid = json_string_value(json_object_get(
        json_object_get(json_object_get(want, "files"), "model-00002-of-00002.safetensors"),
        "sha256"));
    if (!strstr(err, "checksum mismatch for model-00002-of-00002.safetensors") || !strstr(err, oid))
        fail_msg("unexpected message: %s", err);
    json_decref(want);
    // Nothing unverified is left to be used or resumed.
    assert_false(exists(dir, "model-00002-of-00002.safetensors"));
    assert_false(exists(dir, "model-00002-of-00002.safetensors.part"));
    assert_false(exists(dir, MODEL_MANIFEST_FILENAME));

    // A corrupt small (non-LFS) file is caught by its git blob id (in a fresh directory: the
    // good config.json from above would be reused).
    remove_tree(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    fixture_control("/_reset", "{}");
    fixture_control("/_control", "{\"corrupt\": \"config.json\"}");
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    if (!strstr(err, "checksum mismatch for config.json"))
        fail_msg("unexpected message: %s", err);
    remove_tree(dir);
    free(dir);
}

static void model_fetch_needs_token_when_server_does(void **state)
{
    (void)state;
    char *dir = make_dir();
    fixture_control("/_control", "{\"require_token\": \"hf_clipcapTestToken\"}");
    struct model_fetch_options options;
    test_options(&options, dir);
    options.token = NULL; // from HF_TOKEN, which is unset
    char err[2048];
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    if (!strstr(err, "HTTP 401") || !strstr(err, "HF_TOKEN"))
        fail_msg("unexpected message: %s", err);
    json_t *log = fixture_log();
    assert_int_equal(json_array_size(log), 1); // 401 is not retried
    json_decref(log);

    setenv("HF_TOKEN", "hf_clipcapTestToken", 1);
    fixture_control("/_reset", "{}");
    fixture_control("/_control", "{\"require_token\": \"hf_clipcapTestToken\"}");
    char wrong_err[2048];
    options.token = "hf_wrong";
    assert_int_equal(model_fetch(&options, NULL, wrong_err, sizeof wrong_err), -1);
    assert_null(strstr(wrong_err, "hf_wrong")); // the token never reaches a message
    options.token = NULL;
    fixture_control("/_reset", "{}");
    fixture_control("/_control", "{\"require_token\": \"hf_clipcapTestToken\"}");
    if (model_fetch(&options, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    unsetenv("HF_TOKEN");
    assert_complete(dir);
    // The token went to the hub, never to the CDN host the LFS files were redirected to.
    log = fixture_log();
    int to_hub = 0, to_cdn = 0, cdn_with_token = 0;
    size_t index;
    json_t *entry;
    json_array_foreach(log, index, entry)
    {
        bool cdn = strncmp(json_string_value(json_object_get(entry, "path")), "/cdn/", 5) == 0;
        bool authorized = json_is_true(json_object_get(entry, "authorized"));
        to_cdn += cdn;
        to_hub += !cdn && authorized;
        cdn_with_token += cdn && authorized;
    }
    int total = (int)json_array_size(log);
    json_decref(log);
    assert_int_equal(to_cdn, 2);
    assert_int_equal(cdn_with_token, 0);
    assert_int_equal(to_hub, total - to_cdn); // every hub request carried the token
    remove_tree(dir);
    free(dir);
}

static void model_fetch_offline(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct model_fetch_options options;
    test_options(&options, dir);
    char err[2048];
    struct model_fetch_stats stats;

    // Offline on an empty directory: a clear error, no request.
    options.offline = true;
    assert_int_equal(model_fetch(&options, &stats, err, sizeof err), -1);
    if (!strstr(err, "offline") || !strstr(err, MODEL_MANIFEST_FILENAME))
        fail_msg("unexpected message: %s", err);

    options.offline = false;
    if (model_fetch(&options, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    fixture_control("/_reset", "{}");

    // Offline from the complete directory, with a hub that does not exist.
    options.offline = true;
    options.endpoint = "http://127.0.0.1:1";
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(stats.from_complete_dir);
    assert_int_equal(stats.files_total, 5);
    assert_int_equal(strncmp(stats.revision, "cc59489", 7), 0);
    json_t *log = fixture_log();
    assert_int_equal(json_array_size(log), 0);
    json_decref(log);

    // HF_HUB_OFFLINE=1 means the same.
    options.offline = false;
    setenv("HF_HUB_OFFLINE", "1", 1);
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    unsetenv("HF_HUB_OFFLINE");

    // Another revision is not there.
    options.offline = true;
    options.revision = "0123456789abcdef0123456789abcdef01234567";
    assert_int_equal(model_fetch(&options, &stats, err, sizeof err), -1);
    options.revision = NULL;

    // A truncated file makes the directory incomplete, named in the error.
    char path[1024];
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
    assert_int_equal(truncate(path, 1000), 0);
    assert_int_equal(model_fetch(&options, &stats, err, sizeof err), -1);
    if (!strstr(err, "model-00002-of-00002.safetensors"))
        fail_msg("unexpected message: %s", err);

    // Online again, only that file is fetched; the others verify in place.
    options.offline = false;
    options.endpoint = env("CLIPCAP_TEST_HF_ENDPOINT");
    if (model_fetch(&options, &stats, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(stats.files_downloaded, 1);
    assert_int_equal(stats.files_reused, 4);
    assert_complete(dir);
    remove_tree(dir);
    free(dir);
}

static void model_fetch_lock_excludes_a_second_process(void **state)
{
    (void)state;
    char *dir = make_dir();
    int to_child[2], from_child[2];
    assert_int_equal(pipe(to_child), 0);
    assert_int_equal(pipe(from_child), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        // Another process holding the lock, as a running fetch does.
        char path[1024], byte = 1;
        snprintf(path, sizeof path, "%s/%s", dir, MODEL_FETCH_LOCK_FILENAME);
        int fd = open(path, O_RDWR | O_CREAT, 0644);
        if (fd < 0 || flock(fd, LOCK_EX) != 0)
            _exit(1);
        if (write(from_child[1], &byte, 1) != 1 || read(to_child[0], &byte, 1) != 1)
            _exit(1);
        _exit(0);
    }
    char byte;
    assert_int_equal(read(from_child[0], &byte, 1), 1);

    struct model_fetch_options options;
    test_options(&options, dir);
    options.lock_no_wait = true;
    char err[2048];
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    if (!strstr(err, "another process is fetching"))
        fail_msg("unexpected message: %s", err);
    json_t *log = fixture_log();
    assert_int_equal(json_array_size(log), 0); // it did not start fetching
    json_decref(log);

    assert_int_equal(write(to_child[1], &byte, 1), 1);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (model_fetch(&options, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_complete(dir);
    close(to_child[0]);
    close(to_child[1]);
    close(from_child[0]);
    close(from_child[1]);
    remove_tree(dir);
    free(dir);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// Without --no-wait a second fetch waits for the first to finish instead of failing.
static void model_fetch_lock_waits_for_the_holder(void **state)
{
    (void)state;
    char *dir = make_dir();
    int from_child[2];
    assert_int_equal(pipe(from_child), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char path[1024], byte = 1;
        snprintf(path, sizeof path, "%s/%s", dir, MODEL_FETCH_LOCK_FILENAME);
        int fd = open(path, O_RDWR | O_CREAT, 0644);
        if (fd < 0 || flock(fd, LOCK_EX) != 0 || write(from_child[1], &byte, 1) != 1)
            _exit(1);
        usleep(400 * 1000);
        _exit(0); // the lock goes with the process
    }
    char byte;
    assert_int_equal(read(from_child[0], &byte, 1), 1);
    struct model_fetch_options options;
    test_options(&options, dir);
    char err[2048];
    double start = now_seconds();
    if (model_fetch(&options, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(now_seconds() - start >= 0.3);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_complete(dir);
    close(from_child[0]);
    close(from_child[1]);
    remove_tree(dir);
    free(dir);
}

static void model_fetch_bad_requests(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct model_fetch_options options;
    test_options(&options, dir);
    char err[2048];
    options.variant = "qwen9";
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, "unknown variant 'qwen9'"));
    options.variant = "qwen2.5";
    options.revision = "deadbee";
    assert_int_equal(model_fetch(&options, NULL, err, sizeof err), -1);
    if (!strstr(err, "HTTP 404") || !strstr(err, "revision/deadbee"))
        fail_msg("unexpected message: %s", err);
    // A branch name resolves to the commit and is recorded as asked for.
    options.revision = "main";
    if (model_fetch(&options, NULL, err, sizeof err) != 0)
        fail_msg("%s", err);
    struct model_manifest manifest;
    assert_int_equal(model_manifest_read(dir, &manifest, err, sizeof err), 0);
    assert_string_equal(manifest.requested_revision, "main");
    assert_int_equal(strncmp(manifest.revision, "cc59489", 7), 0);
    model_manifest_free(&manifest);
    remove_tree(dir);
    free(dir);
}

static void model_cmd_fetch_and_offline(void **state)
{
    (void)state;
    char *dir = make_dir();
    setenv("HF_ENDPOINT", env("CLIPCAP_TEST_HF_ENDPOINT"), 1);
    char *fetch[] = {"model", "fetch", "--variant", "qwen2.5", "--dir", dir, NULL};
    assert_int_equal(cmd_model(6, fetch), 0);
    unsetenv("HF_ENDPOINT");
    assert_complete(dir);
    char *offline[] = {"model", "fetch", "--variant", "qwen2.5", "--dir", dir, "--offline", NULL};
    assert_int_equal(cmd_model(7, offline), 0);
    char *unknown[] = {"model", "fetch", "--variant", "nope", "--dir", dir, NULL};
    assert_int_equal(cmd_model(6, unknown), 2);
    char *missing_dir[] = {"model", "fetch", "--variant", "qwen2.5", NULL};
    assert_int_equal(cmd_model(4, missing_dir), 2);
    char *other[] = {"model", "frobnicate", NULL};
    assert_int_equal(cmd_model(2, other), 2);
    char *list[] = {"model", "list", NULL};
    assert_int_equal(cmd_model(2, list), 0);
    char *wrong_model[] = {"model", "fetch", "--variant", "nemotron-fp8",
                           "--dir", dir,     "--offline", NULL};
    assert_int_equal(cmd_model(7, wrong_model), 1); // the directory holds qwen2.5
    remove_tree(dir);
    free(dir);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(model_fetch_full_fetch, setup),
        cmocka_unit_test_setup(model_fetch_resumes_dropped_transfer, setup),
        cmocka_unit_test_setup(model_fetch_resumes_across_runs, setup),
        cmocka_unit_test_setup(model_fetch_checksum_mismatch_fails_loudly, setup),
        cmocka_unit_test_setup(model_fetch_needs_token_when_server_does, setup),
        cmocka_unit_test_setup(model_fetch_offline, setup),
        cmocka_unit_test_setup(model_fetch_lock_excludes_a_second_process, setup),
        cmocka_unit_test_setup(model_fetch_lock_waits_for_the_holder, setup),
        cmocka_unit_test_setup(model_fetch_bad_requests, setup),
        cmocka_unit_test_setup(model_cmd_fetch_and_offline, setup),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return failed;
}
