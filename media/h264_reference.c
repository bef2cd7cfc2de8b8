// Whether an H.264 packet's picture is used for reference (nal_ref_idc != 0), read from the
// NAL unit headers. The decoder skips a picture under AVDISCARD_NONREF exactly when this is
// 0; reading it ourselves lets media_decode_clip ask only for skips that happen and count
// them truthfully.
#include "media_internal.h"

// Returns the nal_ref_idc test of the first slice NAL unit (types 1 and 5): 1 reference,
// 0 non-reference, -1 no slice found or malformed.
static int slice_reference(const uint8_t *nal, size_t size)
{
    if (size < 1)
        return -1;
    int type = nal[0] & 0x1f;
    if (type != 1 && type != 5)
        return -2; // not a slice: keep looking
    return (nal[0] >> 5) & 3 ? 1 : 0;
}

int h264_packet_is_reference(const uint8_t *data, size_t size, int nal_length_size)
{
    if (nal_length_size > 0) {
        // AVCC (MP4/MKV): each NAL unit is preceded by its big-endian length.
        size_t position = 0;
        while (position + (size_t)nal_length_size <= size) {
            size_t length = 0;
            for (int i = 0; i < nal_length_size; i++)
                length = (length << 8) | data[position + (size_t)i];
            position += (size_t)nal_length_size;
            if (length == 0 || length > size - position)
                return -1;
            int result = slice_reference(data + position, length);
            if (result != -2)
                return result;
            position += length;
        }
        return -1;
    }
    // Annex B: NAL units follow 00 00 01 start codes.
    for (size_t i = 0; i + 3 < size; i++) {
        if (data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1) {
            int result = slice_reference(data + i + 3, size - i - 3);
            if (result != -2)
                return result;
            i += 2;
        }
    }
    return -1;
}

int h264_nal_length_size(const uint8_t *extradata, int extradata_size)
{
    // avcC: configurationVersion 1, then lengthSizeMinusOne in the low 2 bits of byte 4.
    if (extradata && extradata_size >= 7 && extradata[0] == 1)
        return (extradata[4] & 3) + 1;
    return 0;
}
