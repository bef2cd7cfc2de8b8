// model_fetch.h: download a model variant's files from the Hugging Face Hub at a pinned
// revision into a directory, verified, resumable and locked; then write the manifest
// (model_manifest.h) the engine reads. What `clipcap model fetch` runs.
//
// Steps: resolve the revision to its full commit (GET {endpoint}/api/models/{id}/revision/{rev}),
// list the files of that commit (GET {endpoint}/api/models/{id}/tree/{sha}?recursive=1, which
// gives each file's size, git blob oid and, for LFS files, the sha256 oid), download each from
// {endpoint}/{id}/resolve/{sha}/{path} following redirects into {path}.part, resuming with an
// HTTP Range request, verify (LFS: sha256 == lfs oid; others: git blob sha1 == oid), rename
// into place, and finally write clipcap-manifest.json. The whole run holds an exclusive flock
// on {dir}/.clipcap-fetch.lock.
#ifndef CLIPCAP_MODEL_FETCH_H
#define CLIPCAP_MODEL_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_FETCH_LOCK_FILENAME ".clipcap-fetch.lock"

struct model_fetch_options {
    const char *variant;  // key in the variants table (model_variants.h); required
    const char *dir;      // model directory, created if missing; required
    const char *revision; // NULL: the variant's pinned revision
    const char *endpoint; // NULL: $HF_ENDPOINT, else https://huggingface.co
    const char *token;    // NULL: $HF_TOKEN (sent as Authorization: Bearer); "" for none
    bool offline;         // no network: succeed only from a complete directory ($HF_HUB_OFFLINE=1
                          // also turns this on)
    bool lock_no_wait;    // another process holds the lock: fail at once instead of waiting
    long connect_timeout_ms;
    long low_speed_seconds; // a transfer under 1 KiB/s for this long is a stall (retried)
    int max_attempts;       // per request, >= 1; timeouts, 5xx and dropped connections retry
    long backoff_base_ms;   // full-jitter exponential backoff between attempts
    // Called after each file is in place (may be NULL): for progress lines.
    void (*on_file)(void *user, const char *path, uint64_t size, bool downloaded);
    void *on_file_user;
};

// What a run did.
struct model_fetch_stats {
    char revision[41]; // the full commit fetched or found
    int files_total;
    int files_downloaded;  // fetched (fully or partly) in this run
    int files_reused;      // already present and verified
    int resumed_transfers; // requests that carried a Range header
    uint64_t bytes_downloaded;
    bool from_complete_dir; // nothing to do: the manifest and files were already there
};

// Defaults: endpoint/token/offline from the environment, 10 s connect, 60 s stall, 5 attempts,
// backoff from 500 ms.
void model_fetch_options_defaults(struct model_fetch_options *options);

// Returns 0 when dir holds the complete, verified model and its manifest; -1 with a message
// in err naming the variant, URL or file at fault. stats may be NULL.
int model_fetch(const struct model_fetch_options *options, struct model_fetch_stats *stats,
                char *err, size_t err_size);

#endif
