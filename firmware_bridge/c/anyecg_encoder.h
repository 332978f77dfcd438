/*
 * AnyECG open GATT profile v1 -- reference firmware-side encoder.
 *
 * Portable C99, no allocation, no dependencies beyond <stdint.h>/<stddef.h>: drop
 * anyecg_encoder.{c,h} into a firmware project (nRF Connect SDK, ESP-IDF, Zephyr,
 * Arduino...) and pass the output buffers to your stack's notify / read calls.
 * The byte layout is specified in firmware_bridge/PROFILE.md.
 *
 * Licence: Apache-2.0 (same as AnyECG-Edge).
 */
#ifndef ANYECG_ENCODER_H
#define ANYECG_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ANYECG_VERSION 1u

/* Sample formats (bytes per sample: 2, 3, 4). */
#define ANYECG_FMT_INT16 0u
#define ANYECG_FMT_INT24 1u
#define ANYECG_FMT_INT32 2u

/* Frame flags. */
#define ANYECG_FLAG_LEAD_OFF 0x01u
#define ANYECG_FLAG_BATTERY_LOW 0x02u
#define ANYECG_FLAG_TIME_RESET 0x04u

#define ANYECG_HEADER_LEN 16u
#define ANYECG_CRC_LEN 2u
#define ANYECG_OVERHEAD (ANYECG_HEADER_LEN + ANYECG_CRC_LEN)
#define ANYECG_MAX_LEAD_NAME 16u
#define ANYECG_BATTERY_UNKNOWN 0xFFu

/* Control point op codes and status codes (indication: [0x80 | op, status]). */
#define ANYECG_OP_START 0x01u
#define ANYECG_OP_STOP 0x02u
#define ANYECG_STATUS_OK 0u
#define ANYECG_STATUS_UNKNOWN_OP 1u
#define ANYECG_STATUS_INVALID_PARAM 2u
#define ANYECG_STATUS_NOT_READY 3u

/* CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection); "123456789" -> 0x29B1. */
uint16_t anyecg_crc16(const uint8_t *data, size_t len);

/* Bytes per sample of a format, 0 if the format is unknown. */
size_t anyecg_sample_size(uint8_t format);

/* Most samples one notification can carry at this ATT MTU (payload = MTU - 3), <= 255. */
size_t anyecg_max_samples(uint16_t att_mtu, uint8_t format);

/*
 * Encode one data frame into out[0..out_cap). seq is the device's sample counter of
 * samples[0]; t_us the device time of samples[0] in microseconds.
 * Returns the frame length, or 0 if out_cap is too small, n is 0, the format is
 * unknown, or a sample does not fit the format's signed range.
 */
size_t anyecg_encode_frame(uint8_t *out, size_t out_cap, uint8_t flags, uint8_t format,
                           uint32_t seq, uint64_t t_us, const int32_t *samples, uint8_t n);

/*
 * Encode the config record (read from the config characteristic). fs_mhz: nominal
 * sampling rate in milli-Hz (500 Hz -> 500000); nv_per_lsb: nanovolts per sample code;
 * battery_pct: 0-100 or ANYECG_BATTERY_UNKNOWN; lead: NUL-terminated ASCII name.
 * Returns the record length or 0 on a bad argument / small buffer.
 */
size_t anyecg_encode_config(uint8_t *out, size_t out_cap, uint8_t format, uint32_t fs_mhz,
                            uint32_t nv_per_lsb, uint8_t battery_pct, const char *lead);

/* Control-point response (2 bytes). Returns 2, or 0 if out_cap < 2. */
size_t anyecg_encode_control_response(uint8_t *out, size_t out_cap, uint8_t op, uint8_t status);

/* Convenience: a stream keeps the sample counter so each call only passes new samples. */
typedef struct {
    uint32_t seq;   /* sample counter of the next sample to send */
    uint8_t format; /* ANYECG_FMT_* */
    uint8_t flags;  /* ANYECG_FLAG_* sent with every frame until changed */
} anyecg_stream_t;

void anyecg_stream_init(anyecg_stream_t *s, uint8_t format, uint32_t first_seq);

/*
 * Encode the next frame and advance s->seq by n (also when a frame is then lost on
 * air: the counter counts acquired samples, so the receiver sees the gap).
 * Returns the frame length or 0 (see anyecg_encode_frame; seq does not advance then).
 */
size_t anyecg_stream_encode(anyecg_stream_t *s, uint8_t *out, size_t out_cap, uint64_t t_us,
                            const int32_t *samples, uint8_t n);

#ifdef __cplusplus
}
#endif

#endif /* ANYECG_ENCODER_H */
