// model_manifest.h: clipcap-manifest.json, written by `clipcap model fetch` into a model
// directory once every file is downloaded and verified; the engine reads it for provenance
// (hf id, full revision, weights digest) and to check that the directory is complete. Needs
// only libc and jansson, so the engine can build it.
#ifndef CLIPCAP_MODEL_MANIFEST_H
#define CLIPCAP_MODEL_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_MANIFEST_FILENAME "clipcap-manifest.json"
#define MODEL_MANIFEST_FORMAT   1

struct model_manifest_file {
    char *path;      // relative to the model directory ("model-00001-of-00004.safetensors")
    uint64_t size;   // bytes
    char sha256[65]; // lowercase hex of the content
    bool lfs;        // stored in Git LFS (its sha256 was checked against the LFS oid)
};

struct model_manifest {
    char *variant;            // "qwen2.5"
    char *hf_model_id;        // "Qwen/Qwen2.5-VL-7B-Instruct"
    char *revision;           // full 40-hex commit
    char *requested_revision; // as asked for ("cc59489")
    char *endpoint;           // hub it came from
    char *fetched_at;         // UTC, ISO 8601
    // sha256 over the lines "<sha256>  <path>\n" of all files sorted by path (sha256sum
    // format): one digest naming the exact weights, for caption_provenance.weights_sha256.
    char weights_sha256[65];
    size_t file_count;
    struct model_manifest_file *files;
};

// Reads dir/clipcap-manifest.json. Returns 0, or -1 with err naming the file and the problem.
int model_manifest_read(const char *dir, struct model_manifest *manifest, char *err,
                        size_t err_size);

// Writes dir/clipcap-manifest.json atomically (temporary file, fsync, rename).
int model_manifest_write(const char *dir, const struct model_manifest *manifest, char *err,
                         size_t err_size);

// Checks that every file of the manifest is present with its recorded size (a quick check:
// hashes are verified when fetched). Returns 0, or -1 naming the first bad file.
int model_manifest_check_files(const char *dir, const struct model_manifest *manifest, char *err,
                               size_t err_size);

void model_manifest_free(struct model_manifest *manifest);

// True for a path that stays inside the model directory: relative, no empty, "." or ".."
// components. Paths from the hub or a manifest are checked with it before any file is opened.
bool model_manifest_path_is_safe(const char *path);

#endif
