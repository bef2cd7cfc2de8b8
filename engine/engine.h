// engine.h: the boundary between the daemon (and tools) and the inference engine.
//
// The daemon hands the engine one request per caption window: sampled RGB frames at their
// native resolution with their timestamps, a prompt, sampling settings and, optionally, a
// stage-2 prompt. The engine does the per-model preprocessing (resize, normalize, patching),
// batches requests from many jobs, runs stage 1 and stage 2, and hands back captions.
// No daemon types cross this boundary; the engine never touches Kafka, Postgres or FFmpeg.
//
// Threading: one thread owns an engine handle (the daemon's engine thread). engine_submit,
// engine_step and engine_collect are not thread-safe with respect to each other.
#ifndef CLIPCAP_ENGINE_H
#define CLIPCAP_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct engine engine;

enum engine_backend {
    ENGINE_BACKEND_CPU = 0,
    ENGINE_BACKEND_CUDA = 1,
    ENGINE_BACKEND_AUTO = 2, // CUDA when built in and a device is usable, else CPU
};

// "auto", "cpu" or "cuda" (configuration, command lines) -> *out; -1 for any other name.
static inline int engine_backend_from_name(const char *name, enum engine_backend *out)
{
    if (!strcmp(name, "auto"))
        *out = ENGINE_BACKEND_AUTO;
    else if (!strcmp(name, "cpu"))
        *out = ENGINE_BACKEND_CPU;
    else if (!strcmp(name, "cuda"))
        *out = ENGINE_BACKEND_CUDA;
    else
        return -1;
    return 0;
}

struct engine_options {
    const char *model_dir;       // Hugging Face model directory (config.json, safetensors...)
    const char *variant;         // variant key: "qwen2.5", "nemotron", "nemotron-fp8", ...
    enum engine_backend backend; // CPU is the reference; CUDA when built and a GPU is present
    int random_weights;          // 1: build weights from config.json alone (tests, benchmarks)
    uint64_t random_seed;        // seed for random_weights
    int threads;                 // CPU backend worker threads (0 = one)
    size_t memory_budget_bytes;  // KV/state pool size (0 = backend default, see below)
    double kv_memory_fraction;   // CUDA, budget 0: this share of the device memory free once
                                 // the weights are loaded goes to the KV pool (0 = 0.5)
    int max_batch_requests;      // requests in flight at once (0 = backend default)
};

// What produced a caption: recorded with every caption row.
struct engine_model_info {
    const char *variant;        // "qwen2.5"
    const char *hf_model_id;    // "Qwen/Qwen2.5-VL-7B-Instruct"
    const char *revision;       // full 40-hex commit, or "" when unknown (random weights)
    const char *weights_sha256; // sha256 over the manifest's file hashes, or ""
    const char *engine_version; // clipcap engine version string
    const char *backend;        // "cpu" or "cuda"
};

// Sampled frames of one window, tightly packed RGB24, frame-major: count*height*width*3 bytes.
struct engine_frames {
    int count;
    int width;
    int height;
    const uint8_t *rgb;
    const int64_t *frame_indices; // source frame index of each sampled frame (count entries)
    const double *timestamps_s;   // presentation time of each sampled frame (count entries)
    double sampling_fps;          // the rate the frames were sampled at (Curator: 2.0)
};

struct engine_sampling {
    int greedy;               // 1: argmax (tests); 0: temperature/top-p sampling
    float temperature;        // Qwen peer default 0.1; Nemotron 0.6
    float top_p;              // Qwen 0.001; Nemotron 0.95
    float repetition_penalty; // Qwen 1.05; Nemotron 1.0
    int max_output_tokens;    // 512
    uint64_t seed;            // per-request seed so a retried job samples the same tokens
    int ignore_stop_tokens;   // benchmarks: always generate max_output_tokens (random weights)
};

struct engine_request {
    uint64_t caller_token;          // returned unchanged in the result
    struct engine_frames frames;    // borrowed until engine_submit returns
    const char *prompt_text;        // stage-1 user prompt
    const char *stage2_prompt_text; // NULL: stage 1 only; else the stage-2 prefix
    struct engine_sampling sampling;
    float evs_pruning_rate; // Nemotron EVS (0 = off)
};

enum engine_finish_reason {
    ENGINE_FINISH_STOP = 0,   // a stop token
    ENGINE_FINISH_LENGTH = 1, // max_output_tokens reached
};

enum engine_status {
    ENGINE_OK = 0,
    ENGINE_ERROR_INPUT = 1,     // this request's input is unusable (permanent)
    ENGINE_ERROR_RESOURCES = 2, // out of memory for this request now (transient: retry later)
    ENGINE_ERROR_INTERNAL = 3,  // a bug or backend failure
};

struct engine_stage_output {
    char *text; // UTF-8 caption, owned by the result
    int prompt_tokens;
    int cached_prompt_tokens; // of those, taken from the KV cache (stage 2: the stage-1 prefix)
    int output_tokens;
    enum engine_finish_reason finish_reason;
    double prefill_seconds;
    double decode_seconds;
};

struct engine_result {
    uint64_t caller_token;
    enum engine_status status;
    char error[256]; // set when status != ENGINE_OK
    struct engine_stage_output stage1;
    struct engine_stage_output stage2; // text == NULL when stage 2 was not asked for
    double queue_seconds;              // submit to first GPU/CPU work
};

// Opens a model. On failure returns non-zero and writes a message naming the cause to err.
int engine_open(const struct engine_options *options, engine **out, char *err, size_t err_size);
void engine_close(engine *e);
const struct engine_model_info *engine_info(const engine *e);

// What the engine holds, for logs and metrics. Device figures are 0 on the CPU backend.
struct engine_memory {
    size_t weights_bytes;          // model weights as loaded
    size_t kv_pool_bytes;          // the KV (and state) cache pool, allocated at open
    long kv_pool_tokens;           // tokens the pool holds
    long kv_free_tokens;           // tokens free now
    size_t activations_peak_bytes; // CUDA: peak tensor memory beyond weights and pool
    size_t workspace_bytes;        // CUDA: scratch and GEMM workspace
    size_t device_free_bytes, device_total_bytes; // CUDA: cudaMemGetInfo now
};
int engine_memory(engine *e, struct engine_memory *out);

// Queues a request; the engine copies what it needs from the frames. Non-zero: rejected now
// (message in err); ENGINE_ERROR_RESOURCES means "try again after collecting results".
int engine_submit(engine *e, const struct engine_request *request, char *err, size_t err_size);

// Runs one scheduling step (a batch of prefill chunks and decode tokens). Returns the number
// of requests still in flight, or -1 on a backend failure (message in err).
int engine_step(engine *e, char *err, size_t err_size);

// Moves up to max finished results into out; returns how many. Free each with
// engine_result_free.
int engine_collect(engine *e, struct engine_result *out, int max);
void engine_result_free(struct engine_result *result);

#ifdef __cplusplus
}
#endif
#endif
