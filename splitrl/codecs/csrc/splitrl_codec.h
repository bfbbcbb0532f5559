/*
 * The codec's C core: the quantizer, run-length coder, bit-packing, frame header and CRC32 of
 * splitrl.codecs, free of Python. The Python extension (splitrl/codecs/_kernels.c) and a device's
 * encoder library compile these same files; splitrl.codecs (numpy) is the byte-exact reference.
 *
 * Device encoder (splitrl_codec.c only: C99, no malloc, no I/O, no libm):
 *
 *     static uint32_t workspace[SPLITRL_ENCODE_WORKSPACE_WORDS(COUNT)];
 *     static uint8_t frame[SPLITRL_FRAME_CAPACITY(COUNT, NDIM)];
 *     size_t size;
 *     int status = splitrl_encode_float32_frame(tensor, shape, NDIM, bits, workspace,
 *                                               sizeof workspace, frame, sizeof frame, &size);
 *
 * makes the frame that splitrl.codecs.encode(tensor, bits) makes (per-tensor min-max quantizer,
 * run-length or bit-packed codes, no entropy stage), byte for byte.
 *
 * Compile with -std=c99 -ffp-contract=off: a fused multiply-add would change the quantizer's
 * bytes. Where SSE2 is available the quantizer, range scan and dequantizer use it; elsewhere (or
 * with -DSPLITRL_CODEC_SCALAR) portable scalar code gives the same bytes.
 */
#ifndef SPLITRL_CODEC_H
#define SPLITRL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return values of the functions below. */
#define SPLITRL_OK 0
/* The tensor has values (non-finite, or both signed zeros at an end of the range) whose frame
 * only the reference makes; not an error of the caller. */
#define SPLITRL_UNSUPPORTED 1
/* bits outside 1..8, ndim outside 0..SPLITRL_MAX_NDIM, an empty or too large tensor. */
#define SPLITRL_BAD_ARGUMENT 2
/* The workspace or the output buffer is smaller than the macros below ask for. */
#define SPLITRL_BUFFER_TOO_SMALL 3
/* A run-length payload the reference rejects (the decoder's message says why). */
#define SPLITRL_MALFORMED 4
#define SPLITRL_NO_MEMORY 5

/* Largest element count the core takes: keeps every sum of decoded stream values in uint64. */
#define SPLITRL_MAX_COUNT (1ull << 30)
#define SPLITRL_MAX_NDIM 8
#define SPLITRL_MIN_RUN 3

/* Bytes of a float32 frame's header: 11 fixed bytes, 4 per dimension, offset, scale, payload
 * length and CRC32. */
#define SPLITRL_FRAME_HEADER(ndim) (11u + 4u * (ndim) + 16u)
/* Bytes enough for the frame of any float32 tensor of `count` elements at any bit-width: the
 * payload is never larger than the codes bit-packed at 8 bits. */
#define SPLITRL_FRAME_CAPACITY(count, ndim) (SPLITRL_FRAME_HEADER(ndim) + (count))
/* 32-bit words of workspace for run_length coding `count` codes, and for encoding a frame. */
#define SPLITRL_RUNS_WORKSPACE_WORDS(count) \
    (3u * ((count) / SPLITRL_MIN_RUN) + (2u * (count) + 8u + 3u) / 4u)
#define SPLITRL_ENCODE_WORKSPACE_WORDS(count) \
    (3u * ((count) / SPLITRL_MIN_RUN) + (3u * (count) + 8u + 3u) / 4u)

/* zlib's CRC32 of `size` bytes continuing `crc` (0 to start), as zlib.crc32(data, crc). */
uint32_t splitrl_crc32(uint32_t crc, const uint8_t *data, size_t size);

/* The frame splitrl.codecs.encode(values, bits) makes for a float32 tensor of shape
 * shape[0..ndim) in C order.
 *
 * :param workspace: SPLITRL_ENCODE_WORKSPACE_WORDS(count) words (workspace_size in bytes).
 * :param frame: where the frame goes, capacity bytes (SPLITRL_FRAME_CAPACITY is always enough).
 * :param frame_size: set to the frame's length on success.
 * :return: SPLITRL_OK, SPLITRL_UNSUPPORTED, SPLITRL_BAD_ARGUMENT or SPLITRL_BUFFER_TOO_SMALL;
 *     nothing is written to frame unless SPLITRL_OK. */
int splitrl_encode_float32_frame(const float *values, const uint32_t *shape, int ndim, int bits,
                                 uint32_t *workspace, size_t workspace_size, uint8_t *frame,
                                 size_t capacity, size_t *frame_size);

/* ---------------------------------------------------------------------------------------------
 * The kernels behind splitrl.codecs._kernels, one per hot loop of the numpy modules.
 */

typedef struct {
    int width;
    int excess_width;
    uint64_t escapes;
} SplitrlStreamWidths;

/* The four streams of a run-length payload, before packing (pointers into a workspace). */
typedef struct {
    uint32_t *literal_counts, *run_lengths, *run_values; /* up to count / MIN_RUN each */
    uint8_t *literals;                                   /* up to count */
    size_t runs, literal_total, trailing;
    int zero_code;
    SplitrlStreamWidths widths[4];
    uint64_t size; /* bytes of the payload */
} SplitrlRuns;

/* Bytes of `count` values packed at `width` bits. */
uint64_t splitrl_packed_size(uint64_t count, int width);

/* Splits the codes, mapped so that zero_code becomes 0, into runs and literals and sizes the
 * run-length payload (rle.py). The workspace holds SPLITRL_RUNS_WORKSPACE_WORDS(count) words and
 * must outlive `runs`. */
void splitrl_scan_runs(const uint8_t *codes, size_t count, int bits, int zero_code,
                       uint32_t *workspace, SplitrlRuns *runs);

/* Writes the runs->size bytes of the payload sized by splitrl_scan_runs(); returns its end. */
uint8_t *splitrl_write_runs(uint8_t *out, const SplitrlRuns *runs);

/* Packs min(codes[i], 2**width - 1) at width (1..8) bits, MSB first, zero-padded to a byte
 * (bitpack.py); returns the end of the written bytes. */
uint8_t *splitrl_pack_codes(uint8_t *out, const uint8_t *codes, size_t count, int width);

/* Reads `count` codes of `width` (1..8) bits from exactly splitrl_packed_size(count, width) bytes. */
void splitrl_unpack_codes(const uint8_t *in, size_t count, int width, uint8_t *codes);

/* The per-tensor min-max offset and scale of a non-empty float32 buffer, as quantize.py computes
 * them; 0 where numpy's result cannot be reproduced exactly (non-finite values or range, or both
 * signed zeros at an end of the range). */
int splitrl_float32_parameters(const float *values, size_t count, int bits, float *offset,
                               float *scale);

/* The codes of float32 (is_float) or uint8 values: clip(rint((x - offset) / scale), 0, levels). */
void splitrl_quantize(uint8_t *codes, const void *values, int is_float, size_t count,
                      float offset, float scale, int levels);

/* float32 offset + code * scale for every code below `distinct` (quantize.dequantize). */
void splitrl_dequantize(float *out, const uint8_t *codes, size_t count, float offset,
                        float scale, int distinct);

/* run_length_decode() of rle.py into `codes` (count bytes), with the same checks in the same
 * order: SPLITRL_OK, or SPLITRL_MALFORMED with the reference's message in `message`, or
 * SPLITRL_NO_MEMORY. Uses malloc; not part of the device library. */
int splitrl_decode_runs(const uint8_t *payload, uint64_t size, int bits, uint64_t count,
                        uint8_t *codes, char *message, size_t message_size);

/* A float32 frame that splitrl_encode_float32_frame could have made, checked like the header
 * checks of frame.py and the CRC. */
typedef struct {
    int ndim, bits, run_length;
    uint32_t shape[SPLITRL_MAX_NDIM];
    uint64_t count;
    float offset, scale;
    const uint8_t *payload;
    uint64_t payload_size;
} SplitrlFloat32Frame;

/* 1 and `parsed` filled when `frame` is such a frame of at most max_elements elements, else 0. */
int splitrl_parse_float32_frame(const uint8_t *frame, size_t size, uint64_t max_elements,
                                SplitrlFloat32Frame *parsed);

#ifdef __cplusplus
}
#endif

#endif /* SPLITRL_CODEC_H */
