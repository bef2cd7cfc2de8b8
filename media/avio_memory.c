// A custom AVIOContext over a byte buffer: the daemon fetches clips from object storage into
// memory, so nothing touches the file system.
#include "media_internal.h"

#include <string.h>

#include <libavutil/avstring.h>
#include <libavutil/mem.h>

enum { AVIO_BUFFER_SIZE = 64 * 1024 };

// Containers we accept. A whitelist keeps demuxers that open other URLs (HLS, concat, ...)
// and exotic parsers out of reach of untrusted bytes.
static const char accepted_formats[] = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm";

static int memory_read(void *opaque, uint8_t *buffer, int buffer_size)
{
    memory_reader *reader = opaque;
    size_t left = reader->size - reader->position;
    if (left == 0)
        return AVERROR_EOF;
    size_t count = (size_t)buffer_size < left ? (size_t)buffer_size : left;
    memcpy(buffer, reader->data + reader->position, count);
    reader->position += count;
    return (int)count;
}

static int64_t memory_seek(void *opaque, int64_t offset, int whence)
{
    memory_reader *reader = opaque;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case AVSEEK_SIZE:
        return (int64_t)reader->size;
    case SEEK_SET:
        base = 0;
        break;
    case SEEK_CUR:
        base = (int64_t)reader->position;
        break;
    case SEEK_END:
        base = (int64_t)reader->size;
        break;
    default:
        return AVERROR(EINVAL);
    }
    if (offset > (int64_t)reader->size - base || base + offset < 0)
        return AVERROR(EINVAL);
    reader->position = (size_t)(base + offset);
    return (int64_t)reader->position;
}

int memory_format_open(memory_reader *reader, const uint8_t *data, size_t size,
                       AVFormatContext **out_format)
{
    *out_format = NULL;
    reader->data = data;
    reader->size = size;
    reader->position = 0;

    AVFormatContext *format = avformat_alloc_context();
    uint8_t *buffer = av_malloc(AVIO_BUFFER_SIZE);
    AVIOContext *io = NULL;
    if (!format || !buffer)
        goto fail_nomem;
    io = avio_alloc_context(buffer, AVIO_BUFFER_SIZE, 0, reader, memory_read, NULL, memory_seek);
    if (!io)
        goto fail_nomem;
    buffer = NULL; // owned by io now
    format->pb = io;
    format->flags |= AVFMT_FLAG_CUSTOM_IO;
    format->format_whitelist = av_strdup(accepted_formats);
    format->protocol_whitelist = av_strdup("none");
    if (!format->format_whitelist || !format->protocol_whitelist)
        goto fail_nomem;
    int status = avformat_open_input(&format, NULL, NULL, NULL);
    if (status < 0) {
        // avformat_open_input frees the context on failure but not our custom IO.
        if (io) {
            av_freep(&io->buffer);
            avio_context_free(&io);
        }
        return status;
    }
    *out_format = format;
    return 0;

fail_nomem:
    av_free(buffer);
    if (io) {
        av_freep(&io->buffer);
        avio_context_free(&io);
    }
    avformat_free_context(format);
    return AVERROR(ENOMEM);
}

bool memory_looks_like_container(const uint8_t *data, size_t size)
{
    // The probe reads at most 1 MiB and needs zeroed padding after the data.
    size_t probe_size = size < (1 << 20) ? size : (1 << 20);
    uint8_t *buffer = av_mallocz(probe_size + AVPROBE_PADDING_SIZE);
    if (!buffer)
        return false;
    memcpy(buffer, data, probe_size);
    AVProbeData probe = {.filename = "", .buf = buffer, .buf_size = (int)probe_size};
    int score = 0;
    const AVInputFormat *format = av_probe_input_format3(&probe, 1, &score);
    bool accepted = format && score >= AVPROBE_SCORE_MAX / 4 &&
                    av_match_list(format->name, accepted_formats, ',') > 0;
    av_free(buffer);
    return accepted;
}

void memory_format_close(AVFormatContext **format)
{
    if (!*format)
        return;
    AVIOContext *io = (*format)->pb;
    avformat_close_input(format);
    if (io) {
        av_freep(&io->buffer);
        avio_context_free(&io);
    }
}
