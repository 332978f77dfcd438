/* AnyECG open GATT profile v1 -- reference firmware-side encoder (see anyecg_encoder.h). */
#include "anyecg_encoder.h"

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4u; i++) {
        p[i] = (uint8_t)(v >> (8u * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8u; i++) {
        p[i] = (uint8_t)(v >> (8u * i));
    }
}

uint16_t anyecg_crc16(const uint8_t *data, size_t len)
{
    uint16_t crc = 0xFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (unsigned b = 0; b < 8u; b++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

size_t anyecg_sample_size(uint8_t format)
{
    switch (format) {
    case ANYECG_FMT_INT16:
        return 2u;
    case ANYECG_FMT_INT24:
        return 3u;
    case ANYECG_FMT_INT32:
        return 4u;
    default:
        return 0u;
    }
}

size_t anyecg_max_samples(uint16_t att_mtu, uint8_t format)
{
    size_t width = anyecg_sample_size(format);
    if (width == 0u || att_mtu < 3u + ANYECG_OVERHEAD) {
        return 0u;
    }
    size_t n = ((size_t)att_mtu - 3u - ANYECG_OVERHEAD) / width;
    return n > 255u ? 255u : n;
}

static int fits(int32_t v, size_t width)
{
    if (width >= 4u) {
        return 1;
    }
    int32_t hi = (int32_t)((1L << (8u * width - 1u)) - 1);
    int32_t lo = -hi - 1;
    return v >= lo && v <= hi;
}

size_t anyecg_encode_frame(uint8_t *out, size_t out_cap, uint8_t flags, uint8_t format,
                           uint32_t seq, uint64_t t_us, const int32_t *samples, uint8_t n)
{
    size_t width = anyecg_sample_size(format);
    if (out == NULL || samples == NULL || width == 0u || n == 0u) {
        return 0u;
    }
    size_t len = ANYECG_OVERHEAD + (size_t)n * width;
    if (out_cap < len) {
        return 0u;
    }
    for (size_t i = 0; i < n; i++) {
        if (!fits(samples[i], width)) {
            return 0u;
        }
    }
    out[0] = (uint8_t)ANYECG_VERSION;
    out[1] = flags;
    out[2] = format;
    out[3] = n;
    put_u32(out + 4, seq);
    put_u64(out + 8, t_us);
    uint8_t *p = out + ANYECG_HEADER_LEN;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)samples[i]; /* two's complement, little-endian bytes */
        for (size_t k = 0; k < width; k++) {
            *p++ = (uint8_t)(u >> (8u * k));
        }
    }
    put_u16(p, anyecg_crc16(out, len - ANYECG_CRC_LEN));
    return len;
}

size_t anyecg_encode_config(uint8_t *out, size_t out_cap, uint8_t format, uint32_t fs_mhz,
                            uint32_t nv_per_lsb, uint8_t battery_pct, const char *lead)
{
    if (out == NULL || lead == NULL || anyecg_sample_size(format) == 0u || fs_mhz == 0u ||
        nv_per_lsb == 0u || (battery_pct > 100u && battery_pct != ANYECG_BATTERY_UNKNOWN)) {
        return 0u;
    }
    size_t n_lead = 0;
    while (lead[n_lead] != '\0') {
        if (n_lead >= ANYECG_MAX_LEAD_NAME || (uint8_t)lead[n_lead] > 0x7Fu) {
            return 0u;
        }
        n_lead++;
    }
    size_t len = 12u + n_lead;
    if (out_cap < len) {
        return 0u;
    }
    out[0] = (uint8_t)ANYECG_VERSION;
    out[1] = format;
    put_u32(out + 2, fs_mhz);
    put_u32(out + 6, nv_per_lsb);
    out[10] = battery_pct;
    out[11] = (uint8_t)n_lead;
    for (size_t i = 0; i < n_lead; i++) {
        out[12u + i] = (uint8_t)lead[i];
    }
    return len;
}

size_t anyecg_encode_control_response(uint8_t *out, size_t out_cap, uint8_t op, uint8_t status)
{
    if (out == NULL || out_cap < 2u) {
        return 0u;
    }
    out[0] = (uint8_t)(0x80u | op);
    out[1] = status;
    return 2u;
}

void anyecg_stream_init(anyecg_stream_t *s, uint8_t format, uint32_t first_seq)
{
    s->seq = first_seq;
    s->format = format;
    s->flags = 0u;
}

size_t anyecg_stream_encode(anyecg_stream_t *s, uint8_t *out, size_t out_cap, uint64_t t_us,
                            const int32_t *samples, uint8_t n)
{
    size_t len = anyecg_encode_frame(out, out_cap, s->flags, s->format, s->seq, t_us, samples, n);
    if (len != 0u) {
        s->seq += n; /* wraps modulo 2^32 by design */
    }
    return len;
}
