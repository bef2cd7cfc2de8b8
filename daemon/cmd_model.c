// cmd_model.c: `clipcap model fetch --variant V --dir D [--revision R] [--offline] [--no-wait]`
// downloads a model variant at its pinned revision (storage/model_fetch.h) and writes the
// manifest the engine reads; `clipcap model list` prints the variants table.
#include "commands.h"
#include "model_fetch.h"
#include "model_variants.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: clipcap model fetch --variant V --dir D [--revision R] [--offline] "
                 "[--no-wait]\n"
                 "       clipcap model list\n"
                 "Environment: HF_TOKEN (bearer token), HF_ENDPOINT (default "
                 "https://huggingface.co), HF_HUB_OFFLINE=1 (same as --offline).\n"
                 "Variants:");
    for (size_t i = 0; i < model_variant_count(); i++)
        fprintf(out, " %s", model_variant_at(i)->key);
    fprintf(out, "\n");
}

static void print_file(void *user, const char *path, uint64_t size, bool downloaded)
{
    (void)user;
    fprintf(stderr, "clipcap model fetch: %s %s (%" PRIu64 " bytes)\n", downloaded ? "ok" : "have",
            path, size);
}

static int list_variants(void)
{
    for (size_t i = 0; i < model_variant_count(); i++) {
        const struct model_variant *variant = model_variant_at(i);
        printf("%-16s %-48s %s\n", variant->key, variant->hf_model_id, variant->revision);
    }
    return 0;
}

int cmd_model(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "list") == 0)
        return list_variants();
    if (argc < 2 || strcmp(argv[1], "fetch") != 0) {
        bool help = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
        usage(help ? stdout : stderr);
        return help ? 0 : 2;
    }
    struct model_fetch_options options;
    model_fetch_options_defaults(&options);
    options.on_file = print_file;
    static const struct option long_options[] = {{"variant", required_argument, NULL, 'v'},
                                                 {"dir", required_argument, NULL, 'd'},
                                                 {"revision", required_argument, NULL, 'r'},
                                                 {"offline", no_argument, NULL, 'o'},
                                                 {"no-wait", no_argument, NULL, 'n'},
                                                 {"help", no_argument, NULL, 'h'},
                                                 {NULL, 0, NULL, 0}};
    optind = 0; // full getopt re-initialisation: the tool (and tests) may parse more than once
    int c;
    while ((c = getopt_long(argc - 1, argv + 1, "v:d:r:onh", long_options, NULL)) != -1) {
        switch (c) {
        case 'v':
            options.variant = optarg;
            break;
        case 'd':
            options.dir = optarg;
            break;
        case 'r':
            options.revision = optarg;
            break;
        case 'o':
            options.offline = true;
            break;
        case 'n':
            options.lock_no_wait = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc - 1 || !options.variant || !options.dir) {
        usage(stderr);
        return 2;
    }
    if (!model_variant_find(options.variant)) {
        fprintf(stderr, "clipcap model fetch: unknown variant '%s'\n", options.variant);
        usage(stderr);
        return 2;
    }
    char err[2048];
    struct model_fetch_stats stats;
    if (model_fetch(&options, &stats, err, sizeof err) != 0) {
        fprintf(stderr, "clipcap model fetch: %s\n", err);
        return 1;
    }
    const struct model_variant *variant = model_variant_find(options.variant);
    printf("%s: %s at %s in %s: %d files (%d downloaded, %d already present, %" PRIu64
           " bytes transferred%s)\n",
           variant->key, variant->hf_model_id, stats.revision, options.dir, stats.files_total,
           stats.files_downloaded, stats.files_reused, stats.bytes_downloaded,
           stats.from_complete_dir ? ", directory already complete" : "");
    return 0;
}
