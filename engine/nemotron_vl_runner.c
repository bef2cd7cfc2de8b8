// nemotron_vl_runner.c: one clip's captioning, end to end (see nemotron_vl_runner.h).
#include "nemotron_vl_runner.h"

#include "kv_cache.h"
#include "preprocess_nemotron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_KV_BUDGET     ((size_t)256 << 20)
#define DEFAULT_STATE_SLOTS   4
#define DEFAULT_PREFILL_CHUNK 2048
#define DEFAULT_VISION_FRAMES 8

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct nemotron_runner {
    nemotron_vl *model;
    struct kv_cache *kv;
    struct state_cache *states;
    int prefill_chunk;
    int vision_frames; // frames per vision-tower call
    float *logits;     // [vocab]
};

int nemotron_runner_create(nemotron_vl *model, const struct nemotron_runner_options *options,
                           nemotron_runner **out, char *err, size_t err_size)
{
    *out = NULL;
    const struct nemotron_h_config *c = &nemotron_vl_get_config(model)->llm;
    nemotron_runner *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, err_size, "nemotron runner: out of memory");
        return -1;
    }
    r->model = model;
    r->prefill_chunk =
        options && options->prefill_chunk > 0 ? options->prefill_chunk : DEFAULT_PREFILL_CHUNK;
    r->vision_frames =
        options && options->vision_frames > 0 ? options->vision_frames : DEFAULT_VISION_FRAMES;
    struct kv_cache_config kc;
    nemotron_h_kv_cache_config(c, &kc);
    kc.budget_bytes =
        options && options->kv_budget_bytes ? options->kv_budget_bytes : DEFAULT_KV_BUDGET;
    kc.max_sequences = 2 * DEFAULT_STATE_SLOTS;
    struct state_cache_config sc;
    nemotron_h_state_cache_config(c, &sc);
    size_t per_slot = (size_t)sc.num_layers *
                      ((size_t)(sc.conv_kernel - 1) * sc.conv_channels +
                       (size_t)sc.num_heads * sc.head_dim * sc.state_size) *
                      sizeof(float);
    sc.budget_bytes = options && options->state_budget_bytes ? options->state_budget_bytes
                                                             : DEFAULT_STATE_SLOTS * per_slot;
    sc.max_slots = DEFAULT_STATE_SLOTS;
    r->logits = malloc((size_t)c->vocab_size * sizeof(float));
    if (!r->logits) {
        snprintf(err, err_size, "nemotron runner: out of memory for logits");
        goto fail;
    }
    // A model without attention (or Mamba) layers needs no cache of that kind; the caches
    // refuse zero layers, so create them only when used.
    if (kc.num_layers > 0 &&
        !(r->kv = kv_cache_create(nemotron_vl_backend(model), &kc, err, err_size)))
        goto fail;
    if (sc.num_layers > 0 &&
        !(r->states = state_cache_create(nemotron_vl_backend(model), &sc, err, err_size)))
        goto fail;
    *out = r;
    return 0;
fail:
    nemotron_runner_destroy(r);
    return -1;
}

void nemotron_runner_destroy(nemotron_runner *r)
{
    if (!r)
        return;
    kv_cache_free(r->kv);
    state_cache_free(r->states);
    free(r->logits);
    free(r);
}

void nemotron_caption_result_free(struct nemotron_caption_result *result)
{
    free(result->stage1.text);
    free(result->stage1.tokens);
    free(result->stage2.text);
    free(result->stage2.tokens);
    memset(result, 0, sizeof *result);
}

// A sequence: KV-cache id (-1 when the model has no attention), state slot (-1 without Mamba).
struct sequence {
    int kv, slot, length;
};

static int sequence_new(nemotron_runner *r, struct sequence *s, char *err, size_t err_size)
{
    s->kv = s->slot = -1;
    s->length = 0;
    if (r->kv && kv_cache_sequence_new(r->kv, &s->kv, err, err_size) != 0)
        return -1;
    if (r->states && state_cache_slot_new(r->states, &s->slot, err, err_size) != 0)
        return -1;
    return 0;
}

static void sequence_free(nemotron_runner *r, struct sequence *s)
{
    if (r->kv && s->kv >= 0)
        kv_cache_sequence_free(r->kv, s->kv);
    if (r->states && s->slot >= 0)
        state_cache_slot_free(r->states, s->slot);
    s->kv = s->slot = -1;
}

// A copy of s at its current length (fork of the KV blocks, copy of the recurrent state).
static int sequence_snapshot(nemotron_runner *r, const struct sequence *s, struct sequence *copy,
                             char *err, size_t err_size)
{
    copy->kv = copy->slot = -1;
    copy->length = s->length;
    if (r->kv && kv_cache_fork(r->kv, s->kv, s->length, &copy->kv, err, err_size) != 0)
        return -1;
    if (r->states && (state_cache_slot_new(r->states, &copy->slot, err, err_size) != 0 ||
                      state_cache_copy(r->states, s->slot, copy->slot, err, err_size) != 0))
        return -1;
    return 0;
}

// Feeds ids[0..count) to s in one step; image_rows/embeds as nemotron_h_batch. The last row's
// logits land in r->logits.
static int feed(nemotron_runner *r, struct sequence *s, const int32_t *ids, int count,
                const struct tensor *embeds, const int32_t *image_rows, int image_count, char *err,
                size_t err_size)
{
    struct kv_step plan;
    memset(&plan, 0, sizeof plan);
    int32_t zero_start[2] = {0, count};
    if (r->kv && kv_cache_plan_step(r->kv, &s->kv, &count, 1, &plan, err, err_size) != 0)
        return -1;
    struct nemotron_h_batch batch = {
        .num_seqs = 1,
        .total_tokens = count,
        .token_ids = ids,
        .query_start = r->kv ? plan.query_start : zero_start,
        .context_lens = plan.context_lens,
        .slot_mapping = plan.slot_mapping,
        .block_tables = plan.block_tables,
        .max_blocks_per_seq = plan.max_blocks,
        .state_slots = &s->slot,
        .embeds = embeds,
        .embed_rows = image_rows,
        .embed_count = image_count,
    };
    int rc = nemotron_h_forward(nemotron_vl_llm(r->model), r->kv, r->states, &batch, r->logits, err,
                                err_size);
    if (r->kv)
        kv_step_free(&plan);
    if (rc == 0)
        s->length += count;
    return rc;
}

// Prefills ids[begin..end) of a prompt in chunks; image_positions (sorted prompt positions of
// the <image> ids, image i taking row i of embeds) are matched to each chunk.
static int prefill(nemotron_runner *r, struct sequence *s, const int32_t *ids, int begin, int end,
                   struct tensor *embeds, const int32_t *image_positions, int image_count,
                   char *err, size_t err_size)
{
    int32_t *rows = image_count > 0 ? malloc((size_t)image_count * sizeof(int32_t)) : NULL;
    if (image_count > 0 && !rows) {
        snprintf(err, err_size, "nemotron runner: out of memory");
        return -1;
    }
    int rc = 0;
    for (int at = begin; at < end && rc == 0; at += r->prefill_chunk) {
        int count = end - at < r->prefill_chunk ? end - at : r->prefill_chunk;
        int first = -1, n = 0;
        for (int i = 0; i < image_count; i++)
            if (image_positions[i] >= at && image_positions[i] < at + count) {
                first = first < 0 ? i : first;
                rows[n++] = image_positions[i] - at;
            }
        struct tensor *view = NULL;
        if (n > 0 && !(view = tensor_view(embeds, first, n, 0, NULL, err, err_size))) {
            rc = -1;
            break;
        }
        rc = feed(r, s, ids + at, count, view, rows, n, err, err_size);
        tensor_free(view);
    }
    free(rows);
    return rc;
}

// Samples up to max tokens after a prefill whose last logits are in r->logits.
static int decode(nemotron_runner *r, struct sequence *s, const struct sampler_settings *settings,
                  const int32_t *prompt, int prompt_count, int max_tokens,
                  struct nemotron_caption_stage *out, char *err, size_t err_size)
{
    const struct nemotron_h_config *c = &nemotron_vl_get_config(r->model)->llm;
    sampler *sm = NULL;
    if (sampler_create(settings, c->vocab_size, &sm, err, err_size) != 0)
        return -1;
    out->tokens = malloc((size_t)(max_tokens > 0 ? max_tokens : 1) * sizeof(int32_t));
    if (!out->tokens) {
        sampler_destroy(sm);
        snprintf(err, err_size, "nemotron runner: out of memory");
        return -1;
    }
    for (int i = 0; i < prompt_count; i++)
        sampler_observe(sm, prompt[i]);
    int rc = 0;
    while (out->token_count < max_tokens) {
        int32_t token = sampler_next(sm, r->logits);
        out->tokens[out->token_count++] = token;
        if (sampler_is_stop(sm, token)) {
            out->stopped = 1;
            break;
        }
        if (out->token_count == max_tokens)
            break;
        if ((rc = feed(r, s, &token, 1, NULL, NULL, 0, err, err_size)) != 0)
            break;
    }
    sampler_destroy(sm);
    return rc;
}

struct ids {
    int32_t *v;
    int count;
};

static int append(struct ids *a, const int32_t *v, size_t n, char *err, size_t err_size)
{
    int32_t *grown = realloc(a->v, ((size_t)a->count + n + 1) * sizeof(int32_t));
    if (!grown) {
        snprintf(err, err_size, "nemotron runner: out of memory for the prompt");
        return -1;
    }
    a->v = grown;
    if (n)
        memcpy(a->v + a->count, v, n * sizeof(int32_t));
    a->count += (int)n;
    return 0;
}

static int append_text(const struct nemotron_tokenizer_ops *tok, struct ids *a, const char *text,
                       char *err, size_t err_size)
{
    if (!*text)
        return 0;
    int32_t *v = NULL;
    size_t n = 0;
    if (tok->encode(tok->context, text, &v, &n, err, err_size) != 0)
        return -1;
    int rc = append(a, v, n, err, err_size);
    free(v);
    return rc;
}

// The stage-2 text after "<video>" (Curator's _refine_caption_prompt).
char *nemotron_stage2_text(const char *after_video, const char *prefix, const char *caption)
{
    static const char *const markers[] = {"<SPECIAL_11>Assistant", "<|im_end|>", "</s>"};
    const char *suffix = "";
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++) {
        const char *at = strstr(after_video, markers[i]);
        if (at) {
            suffix = at;
            break;
        }
    }
    size_t n = 1 + strlen(prefix) + strlen(caption) + strlen(suffix) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "\n%s%s%s", prefix, caption, suffix);
    return s;
}

int nemotron_detokenize_stage(const struct nemotron_tokenizer_ops *tok,
                              struct nemotron_caption_stage *st, char *err, size_t err_size)
{
    // The stop token is not part of the caption (vLLM drops a matched stop string).
    int n = st->stopped ? st->token_count - 1 : st->token_count;
    return tok->decode(tok->context, st->tokens, (size_t)n, &st->text, err, err_size);
}

void nemotron_prepared_free(struct nemotron_prepared *p)
{
    tensor_free(p->embeds);
    free(p->ids);
    free(p->image_positions);
    free(p->after_text);
    memset(p, 0, sizeof *p);
}

int nemotron_prepare(nemotron_vl *model, const struct nemotron_tokenizer_ops *tok,
                     const struct nemotron_caption_request *q, int vision_frames,
                     struct nemotron_prepared *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    const struct nemotron_vl_config *c = nemotron_vl_get_config(model);
    const struct radio_config *v = &c->vision;
    struct backend *be = nemotron_vl_backend(model);
    const char *video_tag = q->prompt_text ? strstr(q->prompt_text, "<video>") : NULL;
    if (q->frames < 1 || !q->rgb || !q->frame_indices || !video_tag ||
        strstr(video_tag + 1, "<video>") || q->max_output_tokens < 1 || vision_frames < 1) {
        snprintf(err, err_size,
                 "nemotron: bad request (%d frames, prompt needs exactly one <video>, "
                 "max_output_tokens %d)",
                 q->frames, q->max_output_tokens);
        return -1;
    }
    struct nemotron_pixel_config pc = {.image_size = v->image_size, .patch_size = v->patch_size};
    memcpy(pc.mean, c->norm_mean, sizeof pc.mean);
    memcpy(pc.std, c->norm_std, sizeof pc.std);
    int grid = v->image_size / v->patch_size;
    int per_frame = radio_tokens_per_frame(v);
    int64_t row_values = nemotron_patch_rows_per_frame(&pc) * radio_patch_row_size(v);
    float *rows = malloc((size_t)(q->frames * row_values) * sizeof(float));
    int *tokens_per_frame = malloc((size_t)q->frames * sizeof(int));
    uint8_t *keep = malloc((size_t)q->frames * per_frame);
    float *host = NULL;
    int32_t *kept_index = NULL, *video = NULL;
    char *before = NULL;
    struct tensor *pruned = NULL, *kept_t = NULL;
    struct ids prompt = {0};
    int rc = -1;
    if (!rows || !tokens_per_frame || !keep) {
        snprintf(err, err_size, "nemotron: out of memory for %d frames", q->frames);
        goto done;
    }
    // Vision: frames -> patch rows -> RADIO -> one embedding per 2 x 2 patches.
    if (nemotron_preprocess_frames(&pc, q->rgb, q->frames, q->height, q->width, rows, err,
                                   err_size) != 0)
        goto done;
    out->embeds = tensor_new_2d(be, TENSOR_F32, (int64_t)q->frames * per_frame, v->llm_hidden,
                                "video_embeddings", err, err_size);
    if (!out->embeds)
        goto done;
    // The tower runs a few frames at a time: its activations grow with the frames of a call
    // (vLLM likewise runs at most 128 frames per call).
    for (int f = 0; f < q->frames; f += vision_frames) {
        int n = q->frames - f < vision_frames ? q->frames - f : vision_frames;
        struct tensor *slice = tensor_view(out->embeds, (int64_t)f * per_frame,
                                           (int64_t)n * per_frame, 0, NULL, err, err_size);
        int failed = !slice || radio_forward(nemotron_vl_vision(model), rows + f * row_values, n,
                                             grid, grid, slice, NULL, err, err_size) != 0;
        tensor_free(slice);
        if (failed)
            goto done;
    }
    int image_count = q->frames * per_frame;
    for (int f = 0; f < q->frames; f++)
        tokens_per_frame[f] = per_frame;
    if (q->evs_rate > 0) {
        // EVS on the projected embeddings; the kept rows are compacted with one gather.
        host = malloc((size_t)image_count * v->llm_hidden * sizeof(float));
        kept_index = malloc((size_t)image_count * sizeof(int32_t));
        if (!host || !kept_index) {
            snprintf(err, err_size, "nemotron: out of memory for EVS");
            goto done;
        }
        if (tensor_read(out->embeds, host, tensor_bytes(out->embeds), err, err_size) != 0 ||
            nemotron_evs_retention(host, q->frames, per_frame, v->llm_hidden, q->evs_rate, keep,
                                   tokens_per_frame, err, err_size) != 0)
            goto done;
        int kept = 0;
        for (int i = 0; i < image_count; i++)
            if (keep[i])
                kept_index[kept++] = i;
        kept_t = tensor_from_host(be, TENSOR_I32, 1, (int64_t[]){kept}, kept_index, "evs_kept", err,
                                  err_size);
        pruned = kept_t ? tensor_new_2d(be, TENSOR_F32, kept, v->llm_hidden, "evs_embeddings", err,
                                        err_size)
                        : NULL;
        if (!pruned)
            goto done;
        if (op_gather_rows(be, pruned, out->embeds, kept_t) != 0) {
            snprintf(err, err_size, "nemotron evs: %s",
                     backend_error(be) ? backend_error(be) : "gather failed");
            backend_clear_error(be);
            goto done;
        }
        tensor_free(out->embeds);
        out->embeds = pruned;
        pruned = NULL;
        image_count = kept;
    }
    out->image_count = image_count;

    // Prompt: text before <video>, the video's tokens, text after, each tokenized on its own.
    size_t before_len = (size_t)(video_tag - q->prompt_text);
    before = malloc(before_len + 1);
    out->after_text = malloc(strlen(video_tag + 7) + 1);
    if (!before || !out->after_text) {
        snprintf(err, err_size, "nemotron: out of memory");
        goto done;
    }
    memcpy(before, q->prompt_text, before_len);
    before[before_len] = '\0';
    strcpy(out->after_text, video_tag + strlen("<video>"));
    size_t video_count = 0;
    if (append_text(tok, &prompt, before, err, err_size) != 0 ||
        nemotron_video_tokens(c, q->frame_indices, tokens_per_frame, q->frames, q->fps, tok->encode,
                              tok->context, &video, &video_count, err, err_size) != 0)
        goto done;
    int video_start = prompt.count;
    if (append(&prompt, video, video_count, err, err_size) != 0)
        goto done;
    out->prefix = prompt.count;
    if (append_text(tok, &prompt, out->after_text, err, err_size) != 0)
        goto done;
    out->image_positions = malloc((size_t)(image_count > 0 ? image_count : 1) * sizeof(int32_t));
    if (!out->image_positions) {
        snprintf(err, err_size, "nemotron: out of memory");
        goto done;
    }
    int found = 0;
    for (int i = video_start; i < out->prefix; i++)
        if (prompt.v[i] == c->img_context_token_id && found < image_count)
            out->image_positions[found++] = i;
    if (found != image_count) {
        snprintf(err, err_size, "nemotron: %d <image> ids for %d video embeddings", found,
                 image_count);
        goto done;
    }
    out->ids = prompt.v;
    out->count = prompt.count;
    prompt.v = NULL;
    rc = 0;
done:
    if (rc != 0)
        nemotron_prepared_free(out);
    tensor_free(pruned);
    tensor_free(kept_t);
    free(rows);
    free(tokens_per_frame);
    free(keep);
    free(host);
    free(kept_index);
    free(video);
    free(before);
    free(prompt.v);
    return rc;
}

int nemotron_runner_caption(nemotron_runner *r, const struct nemotron_tokenizer_ops *tok,
                            const struct nemotron_caption_request *q,
                            struct nemotron_caption_result *result, char *err, size_t err_size)
{
    memset(result, 0, sizeof *result);
    double started = now_seconds();
    struct nemotron_prepared p;
    if (nemotron_prepare(r->model, tok, q, r->vision_frames, &p, err, err_size) != 0)
        return -1;
    char *text2 = NULL;
    struct ids prompt2 = {0};
    struct sequence s1 = {-1, -1, 0}, snap = {-1, -1, 0};
    int rc = -1;
    result->video_tokens = p.image_count;
    result->prefix_tokens = p.prefix;
    result->stage1.prompt_tokens = p.count;

    // Stage 1: prefill up to the end of the video, snapshot there for stage 2, go on.
    if (sequence_new(r, &s1, err, err_size) != 0 ||
        prefill(r, &s1, p.ids, 0, p.prefix, p.embeds, p.image_positions, p.image_count, err,
                err_size) != 0)
        goto done;
    if (q->stage2_prefix && sequence_snapshot(r, &s1, &snap, err, err_size) != 0)
        goto done;
    if (prefill(r, &s1, p.ids, p.prefix, p.count, p.embeds, p.image_positions, p.image_count, err,
                err_size) != 0)
        goto done;
    double decode_start = now_seconds();
    result->stage1.prefill_seconds = decode_start - started;
    if (decode(r, &s1, &q->sampling, p.ids, p.count, q->max_output_tokens, &result->stage1, err,
               err_size) != 0 ||
        nemotron_detokenize_stage(tok, &result->stage1, err, err_size) != 0)
        goto done;
    result->stage1.decode_seconds = now_seconds() - decode_start;
    sequence_free(r, &s1);

    if (q->stage2_prefix) {
        // Stage 2 from the snapshot: only the refinement text is new.
        text2 = nemotron_stage2_text(p.after_text, q->stage2_prefix, result->stage1.text);
        if (!text2) {
            snprintf(err, err_size, "nemotron runner: out of memory");
            goto done;
        }
        if (append(&prompt2, p.ids, (size_t)p.prefix, err, err_size) != 0 ||
            append_text(tok, &prompt2, text2, err, err_size) != 0)
            goto done;
        result->stage2.prompt_tokens = prompt2.count;
        double stage2_start = now_seconds();
        if (prefill(r, &snap, prompt2.v, p.prefix, prompt2.count, p.embeds, p.image_positions,
                    p.image_count, err, err_size) != 0)
            goto done;
        double stage2_decode = now_seconds();
        result->stage2.prefill_seconds = stage2_decode - stage2_start;
        if (decode(r, &snap, &q->sampling, prompt2.v, prompt2.count, q->max_output_tokens,
                   &result->stage2, err, err_size) != 0 ||
            nemotron_detokenize_stage(tok, &result->stage2, err, err_size) != 0)
            goto done;
        result->stage2.decode_seconds = now_seconds() - stage2_decode;
    }
    rc = 0;
done:
    sequence_free(r, &s1);
    sequence_free(r, &snap);
    if (rc != 0)
        nemotron_caption_result_free(result);
    nemotron_prepared_free(&p);
    free(text2);
    free(prompt2.v);
    return rc;
}
