// Whether an H.264 or HEVC packet's picture can be referenced by other pictures, read from
// the NAL unit headers. The decoder skips a picture under AVDISCARD_NONREF exactly when its
// NAL type/ref_idc marks it non-reference; reading it ourselves lets media_decode_clip ask
// only for skips that are exact and count them truthfully.
#include "media_internal.h"

#include <libavcodec/codec_id.h>

// Reference status of one NAL unit: 1 reference picture, 0 non-reference picture, -2 not a
// picture (parameter sets, SEI...): keep looking.
static int nal_reference(enum AVCodecID codec_id, const uint8_t *nal, size_t size)
{
    if (codec_id == AV_CODEC_ID_H264) {
        if (size < 1)
            return -1;
        int type = nal[0] & 0x1f;
        if (type != 1 && type != 5) // coded slice, IDR slice
            return -2;
        return (nal[0] >> 5) & 3 ? 1 : 0; // nal_ref_idc
    }
    if (size < 2)
        return -1;
    int type = (nal[0] >> 1) & 0x3f;
    if (type >= 32) // VPS, SPS, PPS, SEI, AUD...
        return -2;
    // Types 0..14 that are even (TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N, RSV_VCL_N10/12/14)
    // are sub-layer non-reference pictures.
    return type <= 14 && type % 2 == 0 ? 0 : 1;
}

int packet_is_reference(enum AVCodecID codec_id, const uint8_t *data, size_t size,
                        int nal_length_size)
{
    if (nal_length_size > 0) {
        // Length-prefixed (MP4/MKV): each NAL unit is preceded by its big-endian length.
        size_t position = 0;
        while (position + (size_t)nal_length_size <= size) {
            size_t length = 0;
            for (int i = 0; i < nal_length_size; i++)
                length = (length << 8) | data[position + (size_t)i];
            position += (size_t)nal_length_size;
            if (length == 0 || length > size - position)
                return -1;
            int result = nal_reference(codec_id, data + position, length);
            if (result != -2)
                return result;
            position += length;
        }
        return -1;
    }
    // Annex B: NAL units follow 00 00 01 start codes.
    for (size_t i = 0; i + 3 < size; i++) {
        if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
            int result = nal_reference(codec_id, data + i + 3, size - i - 3);
            if (result != -2)
                return result;
            i += 2;
        }
    }
    return -1;
}

int nal_length_size(enum AVCodecID codec_id, const uint8_t *extradata, int extradata_size)
{
    if (!extradata || extradata_size < 1 || extradata[0] != 1)
        return 0; // Annex B
    // avcC: lengthSizeMinusOne in the low 2 bits of byte 4.
    if (codec_id == AV_CODEC_ID_H264 && extradata_size >= 7)
        return (extradata[4] & 3) + 1;
    // hvcC: lengthSizeMinusOne in the low 2 bits of byte 21.
    if (codec_id == AV_CODEC_ID_HEVC && extradata_size >= 23)
        return (extradata[21] & 3) + 1;
    return 0;
}

bool hevc_single_temporal_layer(const uint8_t *extradata, int extradata_size)
{
    // hvcC byte 21: constantFrameRate (2 bits), numTemporalLayers (3 bits), temporalIdNested,
    // lengthSizeMinusOne. numTemporalLayers 1: every picture has TemporalId 0, so a
    // sub-layer non-reference picture is referenced by nothing. 0 means unknown.
    if (!extradata || extradata_size < 23 || extradata[0] != 1)
        return false;
    return ((extradata[21] >> 3) & 7) == 1;
}
