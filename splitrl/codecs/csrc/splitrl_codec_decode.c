/*
 * The decoder side of the codec's C core (splitrl_codec.h): unpacking, the run-length decoder
 * with the checks and messages of rle.py, the dequantizer and the header checks of float32
 * frames. Only the Python extension compiles it (it allocates and formats messages); a device's
 * encoder library does not need it.
 *
 * Untrusted input never makes it read or write outside its buffers: every stream is
 * bounds-checked before it is read, and the element counts are checked before any output is
 * written.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "splitrl_codec_internal.h"

static const char PAYLOAD[] = "run-length payload";

/* Unpacks `count` values of `width` bits (0..32), MSB first. Up to 8 bits, eight values come
 * from exactly `width` bytes; bytes at 8 bits are copied. */
#define DEFINE_UNPACK(name, type)                                                              \
    static void name(const uint8_t *in, size_t count, int width, type *values) {               \
        size_t index = 0;                                                                      \
        if (width == 0) {                                                                      \
            memset(values, 0, count * sizeof(type));                                           \
            return;                                                                            \
        }                                                                                      \
        if (sizeof(type) == 1 && width == 8) {                                                 \
            memcpy(values, in, count);                                                         \
            return;                                                                            \
        }                                                                                      \
        const uint32_t mask = width_mask(width);                                               \
        if (width <= 8) {                                                                      \
            for (; index + 8 <= count; index += 8) {                                           \
                uint64_t word = 0;                                                             \
                for (int byte = 0; byte < width; byte++) {                                     \
                    word = (word << 8) | *in++;                                                \
                }                                                                              \
                for (int j = 0; j < 8; j++) {                                                  \
                    values[index + j] = (type)((word >> ((7 - j) * width)) & mask);            \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        uint64_t accumulator = 0;                                                              \
        int available = 0;                                                                     \
        for (; index < count; index++) {                                                       \
            while (available < width) {                                                        \
                accumulator = (accumulator << 8) | *in++;                                      \
                available += 8;                                                                \
            }                                                                                  \
            available -= width;                                                                \
            values[index] = (type)((accumulator >> available) & mask);                         \
        }                                                                                      \
    }
DEFINE_UNPACK(unpack_u64, uint64_t)
DEFINE_UNPACK(unpack_u8, uint8_t)

void splitrl_unpack_codes(const uint8_t *in, size_t count, int width, uint8_t *values) {
    unpack_u8(in, count, width, values);
}

/* ---------------------------------------------------------------------------------------------
 * Bounds-checked reading of an untrusted payload (reader.py), with the same messages.
 */

typedef struct {
    const uint8_t *data;
    uint64_t size;
    uint64_t offset;
    char *message; /* where a failure's message goes */
    size_t message_size;
    int status; /* SPLITRL_OK until a failure */
} Reader;

/* Records the reference's CodecError message; returns -1. */
static int fail(Reader *reader, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(reader->message, reader->message_size, format, arguments);
    va_end(arguments);
    reader->status = SPLITRL_MALFORMED;
    return -1;
}

/* Records a failed allocation; returns -1. */
static int out_of_memory(Reader *reader) {
    reader->status = SPLITRL_NO_MEMORY;
    return -1;
}

static const uint8_t *take(Reader *reader, uint64_t size, const char *field, const char *suffix) {
    const uint64_t remaining = reader->size - reader->offset;
    if (size > remaining) {
        fail(reader, "%s truncated: %s%s needs %llu bytes at offset %llu, only %llu left",
             PAYLOAD, field, suffix, (unsigned long long)size, (unsigned long long)reader->offset,
             (unsigned long long)remaining);
        return NULL;
    }
    const uint8_t *chunk = reader->data + reader->offset;
    reader->offset += size;
    return chunk;
}

static int read_u8(Reader *reader, const char *field, const char *suffix, int *value) {
    const uint8_t *byte = take(reader, 1, field, suffix);
    if (byte == NULL) {
        return -1;
    }
    *value = *byte;
    return 0;
}

static int read_varint(Reader *reader, const char *field, uint64_t *value) {
    *value = 0;
    for (int index = 0; index < 5; index++) {
        int byte;
        if (read_u8(reader, field, "", &byte) < 0) {
            return -1;
        }
        *value |= (uint64_t)(byte & 0x7F) << (7 * index);
        if (byte < 0x80) {
            return 0;
        }
    }
    return fail(reader, "%s: %s is not a valid variable-length integer", PAYLOAD, field);
}

/* The two bit-widths that open a patched stream and its main packed bytes, or NULL on error. */
static const uint8_t *read_stream_header(Reader *reader, uint64_t count, const char *field,
                                         int *width, int *excess_width) {
    if (read_u8(reader, field, " width", width) < 0 ||
        read_u8(reader, field, " width", excess_width) < 0) {
        return NULL;
    }
    if (*width > MAX_WIDTH || *excess_width > MAX_WIDTH) {
        fail(reader, "%s: bit-width %d exceeds %d", field,
                     *width > *excess_width ? *width : *excess_width, MAX_WIDTH);
        return NULL;
    }
    return take(reader, splitrl_packed_size(count, *width), field, "");
}

/* decode_patched() of patched.py; on success *values is a malloc buffer of `count` values. */
static int read_stream(Reader *reader, uint64_t count, const char *field, uint64_t **values) {
    int width, excess_width;
    *values = NULL;
    const uint8_t *main_bytes = read_stream_header(reader, count, field, &width, &excess_width);
    if (main_bytes == NULL) {
        return -1;
    }
    uint64_t *decoded = malloc(count ? count * sizeof(uint64_t) : 1);
    if (decoded == NULL) {
        return out_of_memory(reader);
    }
    unpack_u64(main_bytes, count, width, decoded);
    const uint64_t escape = (1ull << width) - 1;
    uint64_t escapes = 0;
    for (uint64_t index = 0; index < count; index++) {
        escapes += decoded[index] == escape;
    }
    const uint8_t *excess_bytes =
        take(reader, splitrl_packed_size(escapes, excess_width), field, " patch");
    if (excess_bytes == NULL) {
        free(decoded);
        return -1;
    }
    if (escapes) {
        uint64_t accumulator = 0;
        int available = 0;
        const uint32_t mask = width_mask(excess_width);
        for (uint64_t index = 0; index < count; index++) {
            if (decoded[index] != escape) {
                continue;
            }
            while (available < excess_width) {
                accumulator = (accumulator << 8) | *excess_bytes++;
                available += 8;
            }
            available -= excess_width;
            decoded[index] += (accumulator >> available) & mask;
        }
    }
    *values = decoded;
    return 0;
}

/* The literal stream of `count` codes into `codes`. A code of `limit` or more only sets
 * *too_wide: the reference reports it after the checks of the whole payload. */
static int read_literals(Reader *reader, uint64_t count, uint64_t limit, uint8_t *codes,
                         int *too_wide) {
    static const char field[] = "literals";
    int width, excess_width;
    const uint8_t *main_bytes = read_stream_header(reader, count, field, &width, &excess_width);
    if (main_bytes == NULL) {
        return -1;
    }
    const uint64_t escape = (1ull << width) - 1;
    uint64_t escapes = 0;
    if (width <= 8) {
        if (width == 0) {
            memset(codes, 0, count);
        } else {
            splitrl_unpack_codes(main_bytes, count, width, codes);
        }
        const uint8_t escape_code = (uint8_t)escape;
        uint8_t largest = 0;
        for (uint64_t index = 0; index < count; index++) {
            escapes += codes[index] == escape_code;
            largest = codes[index] > largest ? codes[index] : largest;
        }
        /* an escaped value is at least the escape symbol */
        *too_wide |= count && largest >= limit;
    } else {
        /* every escape symbol (2**width - 1 >= 511) and any value above 255 is too wide */
        uint64_t accumulator = 0;
        int available = 0;
        for (uint64_t index = 0; index < count; index++) {
            while (available < width) {
                accumulator = (accumulator << 8) | *main_bytes++;
                available += 8;
            }
            available -= width;
            const uint64_t value = (accumulator >> available) & width_mask(width);
            escapes += value == escape;
            *too_wide |= value >= limit;
            codes[index] = (uint8_t)value;
        }
    }
    const uint8_t *excess_bytes = take(reader, splitrl_packed_size(escapes, excess_width), field, " patch");
    if (excess_bytes == NULL) {
        return -1;
    }
    if (escapes && !*too_wide) {
        /* width <= bits here: only escaped values can reach the limit. The excesses are
         * unpacked a block at a time; the merge is branch-free (escapes are unpredictable). */
        enum { BLOCK = 256 };
        uint32_t block[BLOCK];
        uint64_t accumulator = 0, remaining = escapes, index = 0;
        int available = 0, exceeds = 0;
        const uint32_t mask = width_mask(excess_width);
        const uint8_t escape_code = (uint8_t)escape;
        while (remaining) {
            const size_t filled = remaining < BLOCK ? (size_t)remaining : BLOCK;
            remaining -= filled;
            for (size_t slot = 0; slot < filled; slot++) {
                while (available < excess_width) {
                    accumulator = (accumulator << 8) | *excess_bytes++;
                    available += 8;
                }
                available -= excess_width;
                block[slot] = (uint32_t)((accumulator >> available) & mask);
            }
            /* the codes hold exactly `escapes` escape symbols: index stays below count */
            for (size_t position = 0; position < filled; index++) {
                /* a mask rather than a conditional, which compilers turn into a branch */
                const uint8_t code = codes[index];
                const uint8_t escaped = (uint8_t)(0 - (code == escape_code));
                const uint64_t value = escape + block[position];
                exceeds |= escaped & (value >= limit);
                codes[index] = (uint8_t)(code ^ ((code ^ (uint8_t)value) & escaped));
                position += escaped & 1u;
            }
        }
        *too_wide |= exceeds;
    }
    return 0;
}

int splitrl_decode_runs(const uint8_t *payload, uint64_t size, int bits, uint64_t count,
                        uint8_t *codes, char *message, size_t message_size) {
    uint64_t *literal_counts = NULL, *run_lengths = NULL, *run_values = NULL;
    Reader reader = {payload, size, 0, message, message_size, SPLITRL_OK};
    int zero_code;
    uint64_t runs, trailing;
    if (read_u8(&reader, "zero code", "", &zero_code) < 0 ||
        read_varint(&reader, "run count", &runs) < 0 ||
        read_varint(&reader, "trailing literal count", &trailing) < 0) {
        goto done;
    }
    const uint64_t limit = 1ull << bits;
    if ((uint64_t)zero_code >= limit) {
        fail(&reader, "%s: zero code %d exceeds %d bits", PAYLOAD, zero_code, bits);
        goto done;
    }
    if (runs * MIN_RUN + trailing > count) {
        fail(&reader,
                     "%s: %llu runs and %llu trailing literals overflow a tensor of %llu elements",
                     PAYLOAD, (unsigned long long)runs, (unsigned long long)trailing,
                     (unsigned long long)count);
        goto done;
    }
    if (read_stream(&reader, runs, "literal counts", &literal_counts) < 0 ||
        read_stream(&reader, runs, "run lengths", &run_lengths) < 0 ||
        read_stream(&reader, runs, "run values", &run_values) < 0) {
        goto done;
    }
    /* Stream values are below 2**33 and runs <= count / 3 <= 2**30 / 3: no sum overflows. */
    uint64_t total = trailing, run_total = 0;
    int too_wide = 0;
    for (uint64_t index = 0; index < runs; index++) {
        run_lengths[index] += MIN_RUN;
        run_total += run_lengths[index];
        total += literal_counts[index];
        too_wide |= run_values[index] >= limit;
    }
    total += run_total;
    if (total != count) {
        fail(&reader,
                     "%s: runs and literals cover %llu elements, the header says %llu", PAYLOAD,
                     (unsigned long long)total, (unsigned long long)count);
        goto done;
    }
    /* The literals go to the end of `codes`; the expansion below moves them forward. The
     * output never overtakes the next literal: before literal j it holds j literals and at
     * most run_total run codes, and literal j sits at run_total + j. */
    const uint64_t literal_total = count - run_total;
    uint8_t *literal = codes + run_total;
    if (read_literals(&reader, literal_total, limit, literal, &too_wide) < 0) {
        goto done;
    }
    if (reader.offset != reader.size) {
        fail(&reader, "%s has %llu unexpected trailing bytes", PAYLOAD,
                     (unsigned long long)(reader.size - reader.offset));
        goto done;
    }
    if (too_wide) {
        fail(&reader, "%s: a code exceeds %d bits", PAYLOAD, bits);
        goto done;
    }
    uint8_t *out = codes;
    for (uint64_t index = 0; index < runs; index++) {
        const uint64_t literals_here = literal_counts[index], run = run_lengths[index];
        /* `literal - out` is the run codes still to write: at least 16 means a word copy and
         * a word fill of at most 8 codes each stay clear of the unread literals */
        if (literals_here <= 8 && run <= 8 && literal - out >= 16) {
            uint64_t word, fill = 0x0101010101010101ull * (uint8_t)run_values[index];
            memcpy(&word, literal, sizeof word);
            memcpy(out, &word, sizeof word);
            memcpy(out + literals_here, &fill, sizeof fill);
        } else {
            memmove(out, literal, literals_here);
            memset(out + literals_here, (int)run_values[index], run);
        }
        out += literals_here + run;
        literal += literals_here;
    }
    memmove(out, literal, trailing);
    if (zero_code) {
        const uint8_t zero = (uint8_t)zero_code, mask = (uint8_t)(limit - 1);
        for (uint64_t index = 0; index < count; index++) {
            codes[index] = (uint8_t)(codes[index] + zero) & mask;
        }
    }
done:
    free(literal_counts);
    free(run_lengths);
    free(run_values);
    return reader.status;
}

void splitrl_dequantize(float *out, const uint8_t *codes, size_t count, float offset,
                             float scale, int distinct) {
    size_t index = 0;
#ifdef SPLITRL_SSE2
    /* the same two roundings as the table below (int to float is exact), 16 codes at a time */
    const __m128 step = _mm_set1_ps(scale), lo = _mm_set1_ps(offset);
    const __m128i zero = _mm_setzero_si128();
    for (; index + 16 <= count; index += 16) {
        const __m128i bytes = _mm_loadu_si128((const __m128i *)(codes + index));
        const __m128i low = _mm_unpacklo_epi8(bytes, zero), high = _mm_unpackhi_epi8(bytes, zero);
        const __m128i lanes[4] = {_mm_unpacklo_epi16(low, zero), _mm_unpackhi_epi16(low, zero),
                                  _mm_unpacklo_epi16(high, zero), _mm_unpackhi_epi16(high, zero)};
        for (int quarter = 0; quarter < 4; quarter++) {
            const __m128 product = _mm_mul_ps(_mm_cvtepi32_ps(lanes[quarter]), step);
            _mm_storeu_ps(out + index + 4 * quarter, _mm_add_ps(product, lo));
        }
    }
#endif
    float table[256];
    for (int code = 0; code < distinct; code++) {
        const float product = (float)code * scale;
        table[code] = product + offset;
    }
    for (; index < count; index++) {
        out[index] = table[codes[index]];
    }
}

int splitrl_parse_float32_frame(const uint8_t *frame, size_t size, uint64_t max_elements,
                                SplitrlFloat32Frame *parsed) {
    if (size < FIXED_HEADER) {
        return 0;
    }
    const int ndim = frame[10], bits = frame[8];
    const size_t header = SPLITRL_FRAME_HEADER((size_t)ndim);
    if (memcmp(frame, "SPLC", 4) != 0 || frame[4] != FRAME_VERSION ||
        (frame[5] != CODING_BIT_PACKED && frame[5] != CODING_RUN_LENGTH) || frame[6] != 0 ||
        frame[7] != DTYPE_FLOAT32 || bits < 1 || bits > 8 || frame[9] != DTYPE_FLOAT32 ||
        ndim > SPLITRL_MAX_NDIM || size < header) {
        return 0;
    }
    uint64_t count = 1;
    for (int axis = 0; axis < ndim; axis++) {
        parsed->shape[axis] = load_u32(frame + FIXED_HEADER + 4 * axis);
        count *= parsed->shape[axis];
        if (count == 0 || count > max_elements || count > SPLITRL_MAX_COUNT) {
            return 0;
        }
    }
    const uint32_t offset_bits = load_u32(frame + header - 16), scale_bits = load_u32(frame + header - 12);
    memcpy(&parsed->offset, &offset_bits, sizeof parsed->offset);
    memcpy(&parsed->scale, &scale_bits, sizeof parsed->scale);
    parsed->ndim = ndim;
    parsed->bits = bits;
    parsed->run_length = frame[5] == CODING_RUN_LENGTH;
    parsed->count = count;
    parsed->payload = frame + header;
    parsed->payload_size = size - header;
    if (!parameters_are_finite(parsed->offset, parsed->scale, bits) ||
        load_u32(frame + header - 8) != parsed->payload_size) {
        return 0;
    }
    const uint32_t crc = splitrl_crc32(splitrl_crc32(0, frame, header - 4), parsed->payload,
                                       (size_t)parsed->payload_size);
    return crc == load_u32(frame + header - 4) &&
           (parsed->run_length || parsed->payload_size == splitrl_packed_size(count, bits));
}
