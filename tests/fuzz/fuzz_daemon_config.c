// fuzz_daemon_config.c: clipcapd's INI configuration (daemon/config.h) read from a file of
// arbitrary bytes, then printed (the secret-masking path) and freed. A rejected file must say
// why. The CLIPCAP_* environment is left as the fuzzer was started with (normally empty).
#include "fuzz_support.h"

#include "config.h"

#include <stdio.h>
#include <stdlib.h>

static FILE *null_output;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    null_output = fopen("/dev/null", "w");
    if (!null_output) {
        perror("fuzz_daemon_config: /dev/null");
        exit(1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_scratch_dir();
    if (!dir || fuzz_write_file(dir, "clipcapd.ini", data, size) != 0)
        abort();
    char path[1024], err[1024] = "";
    snprintf(path, sizeof(path), "%s/clipcapd.ini", dir);
    struct config config;
    if (config_load(&config, path, 0, NULL, err, sizeof(err)) == 0)
        config_print(&config, null_output);
    else if (err[0] == '\0')
        fuzz_fail("config_load failed without a message");
    // config_load leaves what it had set when it fails; config_free releases it either way.
    config_free(&config);
    return 0;
}
