// fuzz_support.c: see fuzz_support.h.
#include "fuzz_support.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char scratch_dir[512];

static void remove_scratch_dir(void)
{
    // Only the files the targets write live there; they are removed one by one by name.
    static const char *const names[] = {"config.json", "generation_config.json",
                                        "hf_quant_config.json", "model.safetensors",
                                        "clipcapd.ini"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        fuzz_remove_file(scratch_dir, names[i]);
    rmdir(scratch_dir);
}

const char *fuzz_scratch_dir(void)
{
    if (scratch_dir[0])
        return scratch_dir;
    // Prefer tmpfs: on ext4, rewriting a file in place flushes it on close, which made the
    // file-reading targets some ten times slower.
    const char *tmp = getenv("CLIPCAP_FUZZ_SCRATCH");
    if (!tmp || !*tmp)
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(scratch_dir, sizeof(scratch_dir), "%s/clipcap-fuzz-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(scratch_dir)) {
        fprintf(stderr, "fuzz: cannot create a scratch folder %s: %s\n", scratch_dir,
                strerror(errno));
        scratch_dir[0] = '\0';
        return NULL;
    }
    atexit(remove_scratch_dir);
    return scratch_dir;
}

int fuzz_write_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *file = fopen(path, "wb");
    if (!file) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = fwrite(data, 1, size, file) == size;
    ok &= fclose(file) == 0;
    if (!ok) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

void fuzz_remove_file(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
}

char *fuzz_strndup(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    if (!copy)
        return NULL;
    if (size)
        memcpy(copy, data, size);
    copy[size] = '\0';
    return copy;
}

void fuzz_fail(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "fuzz: property broken: ");
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    abort();
}
