// fuzz_support.h: what the fuzz targets share. Each fuzz_*.c defines the libFuzzer entry
// point LLVMFuzzerTestOneInput (and optionally LLVMFuzzerInitialize); under clang it links
// with -fsanitize=fuzzer, under gcc with replay_main.c, which feeds it every corpus file.
#ifndef CLIPCAP_FUZZ_SUPPORT_H
#define CLIPCAP_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// A private scratch folder for targets whose API reads files (made once per process, under
// $CLIPCAP_FUZZ_SCRATCH, else /dev/shm, else $TMPDIR or /tmp; removed at exit). Returns its
// path, or NULL with a message on stderr.
const char *fuzz_scratch_dir(void);

// Writes size bytes to dir/name (replacing it). Returns 0, or -1 with a message on stderr.
int fuzz_write_file(const char *dir, const char *name, const void *data, size_t size);
// Removes dir/name if it exists.
void fuzz_remove_file(const char *dir, const char *name);

// A NUL-terminated copy of data (malloc'd; NULL on allocation failure).
char *fuzz_strndup(const uint8_t *data, size_t size);

// A broken property: prints what and aborts, so libFuzzer records the input as a crash.
_Noreturn void fuzz_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif
