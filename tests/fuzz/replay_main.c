// replay_main.c: a main() for builds without libFuzzer (gcc): runs LLVMFuzzerTestOneInput once
// on every file named on the command line or found (not recursively) in a folder named there,
// so ctest replays the committed corpora under the normal and the ASan+UBSan builds. A crash
// or a sanitizer report fails the test; the file being run is printed first so it is named.
#include "fuzz_support.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// Targets that need no setup do not define LLVMFuzzerInitialize.
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const char *path)
{
    FILE *file = fopen(path, "rb");
    if (!file) {
        fprintf(stderr, "replay: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(file), &st) != 0 || st.st_size < 0) {
        fprintf(stderr, "replay: cannot stat %s\n", path);
        fclose(file);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    // A distinct allocation of exactly size bytes, so ASan sees reads past the input.
    uint8_t *data = malloc(size ? size : 1);
    if (!data || fread(data, 1, size, file) != size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        free(data);
        fclose(file);
        return -1;
    }
    fclose(file);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, size);
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// Runs every regular file of a folder, in name order (so runs are reproducible).
static int run_folder(const char *folder, size_t *count)
{
    DIR *dir = opendir(folder);
    if (!dir) {
        fprintf(stderr, "replay: cannot open folder %s: %s\n", folder, strerror(errno));
        return -1;
    }
    char **paths = NULL;
    size_t n = 0, capacity = 0;
    int rc = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (entry->d_name[0] == '.')
            continue;
        if (n == capacity) {
            capacity = capacity ? 2 * capacity : 64;
            char **grown = realloc(paths, capacity * sizeof(*paths));
            if (!grown) {
                rc = -1;
                break;
            }
            paths = grown;
        }
        size_t length = strlen(folder) + strlen(entry->d_name) + 2;
        paths[n] = malloc(length);
        if (!paths[n]) {
            rc = -1;
            break;
        }
        snprintf(paths[n], length, "%s/%s", folder, entry->d_name);
        n++;
    }
    closedir(dir);
    if (rc == 0)
        qsort(paths, n, sizeof(*paths), compare_names);
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (rc == 0 && stat(paths[i], &st) == 0 && S_ISREG(st.st_mode)) {
            rc = run_file(paths[i]);
            (*count)++;
        }
        free(paths[i]);
    }
    free(paths);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_FILE_OR_FOLDER...\n", argv[0]);
        return 2;
    }
    if (LLVMFuzzerInitialize && LLVMFuzzerInitialize(&argc, &argv) != 0)
        return 1;
    size_t count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        int rc = S_ISDIR(st.st_mode) ? run_folder(argv[i], &count) : run_file(argv[i]);
        if (!S_ISDIR(st.st_mode))
            count++;
        if (rc != 0)
            return 1;
    }
    if (count == 0) {
        fprintf(stderr, "replay: no corpus files found\n");
        return 1;
    }
    printf("replay: %zu inputs ran without a crash\n", count);
    return 0;
}
