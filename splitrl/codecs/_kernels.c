/*
 * Compiled kernels of the codec's hot loops: run-length coding with patched bit-packing
 * (splitrl/codecs/rle.py, patched.py), fixed-width packing of uint8 codes (bitpack.py), the
 * per-tensor quantizer and dequantizer of float32 tensors (quantize.py), and whole frames of the
 * common float32 case (frame.py, codec.py) in one call each way.
 *
 * The numpy modules are the reference: every function here produces the same bytes and the same
 * values, and the run-length decoder makes the same checks in the same order with the same
 * CodecError messages. Untrusted input never makes it read or write outside its buffers: every
 * stream is bounds-checked before it is read, and the element counts are checked before any
 * output is written.
 *
 * float arithmetic must be IEEE single precision without contraction into fused multiply-adds
 * (setup.py passes -ffp-contract=off), or the quantizer would not match numpy bit for bit.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "the codec kernels need float arithmetic evaluated in single precision"
#endif

#define MIN_RUN 3
#define MAX_WIDTH 32
/* Largest element count the kernels take: keeps every sum of decoded stream values in uint64. */
#define MAX_COUNT (1ull << 30)

static const char PAYLOAD[] = "run-length payload";
static PyObject *codec_error = NULL;

static int bit_length(uint64_t value) {
#if defined(__GNUC__) || defined(__clang__)
    return value ? 64 - __builtin_clzll(value) : 0;
#else
    int length = 0;
    while (value) {
        value >>= 1;
        length++;
    }
    return length;
#endif
}

static uint64_t packed_size(uint64_t count, int width) { return (count * (uint64_t)width + 7) / 8; }

static uint32_t width_mask(int width) {
    return width >= 32 ? UINT32_MAX : (uint32_t)((1u << width) - 1u);
}

/* ---------------------------------------------------------------------------------------------
 * Bit-packing, MSB first, zero-padded to a whole byte (bitpack.py).
 */

typedef struct {
    uint8_t *out;
    uint64_t accumulator;
    int pending; /* bits of the accumulator not written yet, below 8 between calls */
} BitWriter;

static void put_bits(BitWriter *writer, uint32_t value, int width) {
    writer->accumulator = (writer->accumulator << width) | (value & width_mask(width));
    writer->pending += width;
    while (writer->pending >= 8) {
        writer->pending -= 8;
        *writer->out++ = (uint8_t)(writer->accumulator >> writer->pending);
    }
}

static void flush_bits(BitWriter *writer) {
    if (writer->pending) {
        *writer->out++ = (uint8_t)(writer->accumulator << (8 - writer->pending));
        writer->pending = 0;
    }
}

/* Packs min(values[i], ceiling) at width bits; returns the end of the written bytes. */
static uint8_t *pack_u32(uint8_t *out, const uint32_t *values, size_t count, int width,
                         uint32_t ceiling) {
    size_t index = 0;
    if (width == 0 || count == 0) {
        return out;
    }
    if (width <= 8) {
        /* Eight values fill exactly `width` bytes. */
        for (; index + 8 <= count; index += 8) {
            uint64_t word = 0;
            for (int j = 0; j < 8; j++) {
                uint32_t value = values[index + j] < ceiling ? values[index + j] : ceiling;
                word = (word << width) | (value & width_mask(width));
            }
            for (int byte = width - 1; byte >= 0; byte--) {
                *out++ = (uint8_t)(word >> (8 * byte));
            }
        }
    }
    BitWriter writer = {out, 0, 0};
    for (; index < count; index++) {
        put_bits(&writer, values[index] < ceiling ? values[index] : ceiling, width);
    }
    flush_bits(&writer);
    return writer.out;
}

/* Packs min(values[i], ceiling) at width bits (0..32); returns the end of the written bytes. */
static uint8_t *pack_u8(uint8_t *out, const uint8_t *values, size_t count, int width,
                        uint32_t ceiling) {
    size_t index = 0;
    if (width == 0 || count == 0) {
        return out;
    }
    if (width == 8) {
        memcpy(out, values, count); /* the ceiling of width 8 is 255: nothing to cap */
        return out + count;
    }
    if (width < 8) {
        for (; index + 8 <= count; index += 8) {
            uint64_t word = 0;
            for (int j = 0; j < 8; j++) {
                const uint32_t value = values[index + j] < ceiling ? values[index + j] : ceiling;
                word = (word << width) | value;
            }
            for (int byte = width - 1; byte >= 0; byte--) {
                *out++ = (uint8_t)(word >> (8 * byte));
            }
        }
    }
    BitWriter writer = {out, 0, 0};
    for (; index < count; index++) {
        put_bits(&writer, values[index] < ceiling ? values[index] : ceiling, width);
    }
    flush_bits(&writer);
    return writer.out;
}

/* Reads `count` values of `width` bits (0..32) from exactly packed_size(count, width) bytes. */
static void unpack_u64(const uint8_t *in, size_t count, int width, uint64_t *values) {
    size_t index = 0;
    if (width == 0) {
        memset(values, 0, count * sizeof(uint64_t));
        return;
    }
    const uint32_t mask = width_mask(width);
    if (width <= 8) {
        for (; index + 8 <= count; index += 8) {
            uint64_t word = 0;
            for (int byte = 0; byte < width; byte++) {
                word = (word << 8) | *in++;
            }
            for (int j = 0; j < 8; j++) {
                values[index + j] = (word >> ((7 - j) * width)) & mask;
            }
        }
    }
    uint64_t accumulator = 0;
    int available = 0;
    for (; index < count; index++) {
        while (available < width) {
            accumulator = (accumulator << 8) | *in++;
            available += 8;
        }
        available -= width;
        values[index] = (accumulator >> available) & mask;
    }
}

static void unpack_u8(const uint8_t *in, size_t count, int width, uint8_t *values) {
    size_t index = 0;
    if (width == 8) {
        memcpy(values, in, count);
        return;
    }
    const uint32_t mask = width_mask(width);
    for (; index + 8 <= count; index += 8) {
        uint64_t word = 0;
        for (int byte = 0; byte < width; byte++) {
            word = (word << 8) | *in++;
        }
        for (int j = 0; j < 8; j++) {
            values[index + j] = (uint8_t)((word >> ((7 - j) * width)) & mask);
        }
    }
    uint64_t accumulator = 0;
    int available = 0;
    for (; index < count; index++) {
        while (available < width) {
            accumulator = (accumulator << 8) | *in++;
            available += 8;
        }
        available -= width;
        values[index] = (uint8_t)((accumulator >> available) & mask);
    }
}

/* Packs values[i] - escape at `width` bits for every values[i] >= escape, MSB first, zero-padded
 * to a byte. The escaped values are first gathered without a branch (escapes are frequent and
 * unpredictable in literal streams) into chunks of a multiple of 8 values, which pack into whole
 * bytes, so the chunks concatenate into one stream. */
#define EXCESS_CHUNK 4096
#define DEFINE_WRITE_EXCESSES(name, type, pack)                                                \
    static uint8_t *name(uint8_t *out, const type *values, size_t count, uint32_t escape,      \
                         int width) {                                                          \
        type chunk[EXCESS_CHUNK];                                                              \
        size_t filled = 0;                                                                     \
        for (size_t index = 0; index < count; index++) {                                       \
            chunk[filled] = (type)(values[index] - escape);                                    \
            filled += values[index] >= escape;                                                 \
            if (filled == EXCESS_CHUNK) {                                                      \
                out = pack(out, chunk, filled, width, width_mask(width));                      \
                filled = 0;                                                                    \
            }                                                                                  \
        }                                                                                      \
        return pack(out, chunk, filled, width, width_mask(width));                             \
    }
DEFINE_WRITE_EXCESSES(write_excesses_u32, uint32_t, pack_u32)
DEFINE_WRITE_EXCESSES(write_excesses_u8, uint8_t, pack_u8)

/* ---------------------------------------------------------------------------------------------
 * Patched streams (patched.py): k (1 byte), k2 (1 byte), values at k bits with the escape
 * symbol 2**k - 1 for those that do not fit, then the excesses at k2 bits.
 */

typedef struct {
    int width;
    int excess_width;
    uint64_t escapes;
} StreamWidths;

/* The widths of minimal size from the histogram of bit_length(value + 1), as choose_widths() of
 * patched.py, ties included: the narrowest width of minimal size wins. */
static StreamWidths select_widths(const uint64_t *histogram, uint64_t count, uint32_t largest) {
    StreamWidths best = {0, 0, 0};
    const int lengths = bit_length((uint64_t)largest + 1) + 1;
    uint64_t best_size = count * (uint64_t)lengths;
    uint64_t fitting = 0;
    for (int width = 0; width < lengths; width++) {
        fitting += histogram[width];
        const uint64_t escapes = count - fitting;
        const uint64_t escape = (1ull << width) - 1;
        const int excess_width = escapes && largest > escape ? bit_length(largest - escape) : 0;
        const uint64_t size = count * width + escapes * excess_width;
        if (size < best_size) {
            best_size = size;
            best.width = width;
            best.excess_width = excess_width;
            best.escapes = escapes;
        }
    }
    return best;
}

static StreamWidths choose_widths(const uint32_t *values, size_t count) {
    /* four partial histograms, so that consecutive increments do not wait on each other */
    uint64_t partial[4][MAX_WIDTH + 2] = {{0}};
    uint64_t histogram[MAX_WIDTH + 2] = {0};
    uint32_t largest = 0;
    if (count == 0) {
        return (StreamWidths){0, 0, 0};
    }
    for (size_t index = 0; index < count; index++) {
        partial[index & 3][bit_length((uint64_t)values[index] + 1)]++;
        largest = values[index] > largest ? values[index] : largest;
    }
    for (int length = 0; length < MAX_WIDTH + 2; length++) {
        histogram[length] = partial[0][length] + partial[1][length] + partial[2][length] +
                            partial[3][length];
    }
    return select_widths(histogram, count, largest);
}

/* choose_widths() for byte values: a histogram of the 256 values, then of their bit lengths. */
static StreamWidths choose_widths_u8(const uint8_t *values, size_t count) {
    enum { SMALL = 512 }; /* below this, clearing the 256-value tables costs more than it saves */
    uint64_t partial[4][256];
    uint64_t histogram[MAX_WIDTH + 2] = {0};
    uint32_t largest = 0;
    if (count < SMALL) {
        for (size_t index = 0; index < count; index++) {
            histogram[bit_length((uint64_t)values[index] + 1)]++;
            largest = values[index] > largest ? values[index] : largest;
        }
        return count ? select_widths(histogram, count, largest) : (StreamWidths){0, 0, 0};
    }
    memset(partial, 0, sizeof partial);
    size_t index = 0;
    for (; index + 4 <= count; index += 4) {
        partial[0][values[index]]++;
        partial[1][values[index + 1]]++;
        partial[2][values[index + 2]]++;
        partial[3][values[index + 3]]++;
    }
    for (; index < count; index++) {
        partial[0][values[index]]++;
    }
    for (uint32_t value = 0; value < 256; value++) {
        const uint64_t total = partial[0][value] + partial[1][value] + partial[2][value] +
                               partial[3][value];
        histogram[bit_length((uint64_t)value + 1)] += total;
        largest = total ? value : largest;
    }
    return select_widths(histogram, count, largest);
}

static uint64_t stream_size(size_t count, StreamWidths widths) {
    return 2 + packed_size(count, widths.width) + packed_size(widths.escapes, widths.excess_width);
}

static uint8_t *write_stream(uint8_t *out, const uint32_t *values, size_t count,
                             StreamWidths widths) {
    const uint32_t escape = width_mask(widths.width);
    *out++ = (uint8_t)widths.width;
    *out++ = (uint8_t)widths.excess_width;
    out = pack_u32(out, values, count, widths.width, escape);
    return widths.escapes ? write_excesses_u32(out, values, count, escape, widths.excess_width)
                          : out;
}

static uint8_t *write_stream_u8(uint8_t *out, const uint8_t *values, size_t count,
                                StreamWidths widths) {
    const uint32_t escape = width_mask(widths.width);
    *out++ = (uint8_t)widths.width;
    *out++ = (uint8_t)widths.excess_width;
    out = pack_u8(out, values, count, widths.width, escape);
    return widths.escapes ? write_excesses_u8(out, values, count, escape, widths.excess_width)
                          : out;
}

static uint8_t *write_varint(uint8_t *out, uint64_t value) {
    while (value >= 0x80) {
        *out++ = (uint8_t)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *out++ = (uint8_t)value;
    return out;
}

/* ---------------------------------------------------------------------------------------------
 * Bounds-checked reading of an untrusted payload (reader.py), with the same messages.
 */

typedef struct {
    const uint8_t *data;
    uint64_t size;
    uint64_t offset;
} Reader;

static const uint8_t *take(Reader *reader, uint64_t size, const char *field, const char *suffix) {
    const uint64_t remaining = reader->size - reader->offset;
    if (size > remaining) {
        PyErr_Format(codec_error,
                     "%s truncated: %s%s needs %llu bytes at offset %llu, only %llu left", PAYLOAD,
                     field, suffix, (unsigned long long)size, (unsigned long long)reader->offset,
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
    PyErr_Format(codec_error, "%s: %s is not a valid variable-length integer", PAYLOAD, field);
    return -1;
}

/* decode_patched() of patched.py; on success *values is a PyMem buffer of `count` values. */
static int read_stream(Reader *reader, uint64_t count, const char *field, uint64_t **values) {
    int width, excess_width;
    *values = NULL;
    if (read_u8(reader, field, " width", &width) < 0 ||
        read_u8(reader, field, " width", &excess_width) < 0) {
        return -1;
    }
    if (width > MAX_WIDTH || excess_width > MAX_WIDTH) {
        PyErr_Format(codec_error, "%s: bit-width %d exceeds %d", field,
                     width > excess_width ? width : excess_width, MAX_WIDTH);
        return -1;
    }
    const uint8_t *main_bytes = take(reader, packed_size(count, width), field, "");
    if (main_bytes == NULL) {
        return -1;
    }
    uint64_t *decoded = PyMem_Malloc(count ? count * sizeof(uint64_t) : 1);
    if (decoded == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    unpack_u64(main_bytes, count, width, decoded);
    const uint64_t escape = (1ull << width) - 1;
    uint64_t escapes = 0;
    for (uint64_t index = 0; index < count; index++) {
        escapes += decoded[index] == escape;
    }
    const uint8_t *excess_bytes =
        take(reader, packed_size(escapes, excess_width), field, " patch");
    if (excess_bytes == NULL) {
        PyMem_Free(decoded);
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

/* ---------------------------------------------------------------------------------------------
 * Run-length coding (rle.py): maximal runs of at least MIN_RUN equal codes, literals between.
 */

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && \
    (defined(__GNUC__) || defined(__clang__))
#define WORD_AT_A_TIME 1
static uint64_t load_word(const uint8_t *bytes) {
    uint64_t word;
    memcpy(&word, bytes, sizeof word);
    return word;
}

/* Index of the lowest zero byte of `word`, 8 if none. Exact for the lowest one: a borrow only
 * marks bytes above a zero byte. */
static int lowest_zero_byte(uint64_t word) {
    const uint64_t found = (word - 0x0101010101010101ull) & ~word & 0x8080808080808080ull;
    return found ? __builtin_ctzll(found) / 8 : 8;
}
#endif

/* The first position p >= start where codes[p] == codes[p + 1] == codes[p + 2], else count.
 * Searched from a run's end (or the start), it is where the next maximal run begins. */
static size_t find_run_start(const uint8_t *codes, size_t start, size_t count) {
    size_t position = start;
#ifdef WORD_AT_A_TIME
    for (; position + 10 <= count; position += 8) {
        const uint64_t next = load_word(codes + position + 1);
        const uint64_t differ = (load_word(codes + position) ^ next) |
                                (next ^ load_word(codes + position + 2));
        const int found = lowest_zero_byte(differ);
        if (found < 8) {
            return position + (size_t)found;
        }
    }
#endif
    for (; position + 2 < count; position++) {
        if (codes[position] == codes[position + 1] && codes[position + 1] == codes[position + 2]) {
            return position;
        }
    }
    return count;
}

/* The first position p >= start where codes[p] != value, else count. */
static size_t find_run_end(const uint8_t *codes, size_t start, size_t count, uint8_t value) {
    size_t position = start;
#ifdef WORD_AT_A_TIME
    const uint64_t repeated = 0x0101010101010101ull * value;
    for (; position + 8 <= count; position += 8) {
        const uint64_t differ = load_word(codes + position) ^ repeated;
        if (differ) {
            return position + (size_t)(__builtin_ctzll(differ) / 8);
        }
    }
#endif
    while (position < count && codes[position] == value) {
        position++;
    }
    return position;
}

/* The four streams of a run-length payload, before packing. */
typedef struct {
    uint32_t *literal_counts, *run_lengths, *run_values; /* up to count / MIN_RUN each */
    uint8_t *literals;                                   /* up to count */
    size_t runs, literal_total, trailing;
    StreamWidths widths[4];
    uint64_t size; /* bytes of the payload */
} Runs;

/* Splits mapped codes into runs and literals and sizes the payload; 0, or -1 with MemoryError.
 * On success runs->literal_counts owns the memory (PyMem_Free). */
static int scan_runs(const uint8_t *mapped, size_t count, Runs *runs) {
    const size_t max_runs = count / MIN_RUN;
    uint32_t *memory = PyMem_Malloc(3 * max_runs * sizeof(uint32_t) + count + 8);
    if (memory == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    runs->literal_counts = memory;
    runs->run_lengths = memory + max_runs;
    runs->run_values = memory + 2 * max_runs;
    runs->literals = (uint8_t *)(memory + 3 * max_runs);
    size_t run_count = 0, literal_total = 0, last_run_end = 0, index = 0;
    while (index < count) {
        size_t start = index;
#ifdef WORD_AT_A_TIME
        /* Search and copy the literals eight positions at a time (the buffer has 8 bytes of
         * slack): runs start every few codes in post-ReLU tensors, so per-call costs count. */
        for (; start + 10 <= count; start += 8) {
            const uint64_t word = load_word(mapped + start), next = load_word(mapped + start + 1);
            memcpy(runs->literals + literal_total + (start - index), &word, sizeof word);
            const int found = lowest_zero_byte((word ^ next) | (next ^ load_word(mapped + start + 2)));
            if (found < 8) {
                start += (size_t)found;
                break;
            }
        }
        if (start + 10 > count)
#endif
        {
            start = find_run_start(mapped, start, count);
            memcpy(runs->literals + literal_total, mapped + index, start - index);
        }
        literal_total += start - index;
        if (start == count) {
            break;
        }
        const size_t end = find_run_end(mapped, start + MIN_RUN, count, mapped[start]);
        runs->literal_counts[run_count] = (uint32_t)(start - last_run_end);
        runs->run_lengths[run_count] = (uint32_t)(end - start - MIN_RUN);
        runs->run_values[run_count] = mapped[start];
        run_count++;
        last_run_end = index = end;
    }
    runs->runs = run_count;
    runs->literal_total = literal_total;
    runs->trailing = count - last_run_end;
    runs->widths[0] = choose_widths(runs->literal_counts, run_count);
    runs->widths[1] = choose_widths(runs->run_lengths, run_count);
    runs->widths[2] = choose_widths(runs->run_values, run_count);
    runs->widths[3] = choose_widths_u8(runs->literals, literal_total);
    uint8_t varints[20];
    runs->size = 1 + (uint64_t)(write_varint(write_varint(varints, run_count), runs->trailing) -
                                varints) +
                 stream_size(run_count, runs->widths[0]) +
                 stream_size(run_count, runs->widths[1]) +
                 stream_size(run_count, runs->widths[2]) +
                 stream_size(literal_total, runs->widths[3]);
    return 0;
}

/* Writes the payload sized by scan_runs(); returns its end. */
static uint8_t *write_runs(uint8_t *out, const Runs *runs, int zero_code) {
    *out++ = (uint8_t)zero_code;
    out = write_varint(write_varint(out, runs->runs), runs->trailing);
    out = write_stream(out, runs->literal_counts, runs->runs, runs->widths[0]);
    out = write_stream(out, runs->run_lengths, runs->runs, runs->widths[1]);
    out = write_stream(out, runs->run_values, runs->runs, runs->widths[2]);
    return write_stream_u8(out, runs->literals, runs->literal_total, runs->widths[3]);
}

/* (code - zero_code) mod 2**bits for every code, into a new PyMem buffer (NULL: MemoryError). */
static uint8_t *map_codes(const uint8_t *codes, size_t count, int bits, int zero_code) {
    uint8_t *mapped = PyMem_Malloc(count ? count : 1);
    if (mapped == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    const uint8_t mask = (uint8_t)((1u << bits) - 1u), zero = (uint8_t)zero_code;
    for (size_t index = 0; index < count; index++) {
        mapped[index] = (uint8_t)(codes[index] - zero) & mask;
    }
    return mapped;
}

/* The literal stream of `count` codes into `codes`. A code of `limit` or more only sets
 * *too_wide: the reference reports it after the checks of the whole payload. */
static int read_literals(Reader *reader, uint64_t count, uint64_t limit, uint8_t *codes,
                         int *too_wide) {
    static const char field[] = "literals";
    int width, excess_width;
    if (read_u8(reader, field, " width", &width) < 0 ||
        read_u8(reader, field, " width", &excess_width) < 0) {
        return -1;
    }
    if (width > MAX_WIDTH || excess_width > MAX_WIDTH) {
        PyErr_Format(codec_error, "%s: bit-width %d exceeds %d", field,
                     width > excess_width ? width : excess_width, MAX_WIDTH);
        return -1;
    }
    const uint8_t *main_bytes = take(reader, packed_size(count, width), field, "");
    if (main_bytes == NULL) {
        return -1;
    }
    const uint64_t escape = (1ull << width) - 1;
    uint64_t escapes = 0;
    if (width <= 8) {
        if (width == 0) {
            memset(codes, 0, count);
        } else {
            unpack_u8(main_bytes, count, width, codes);
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
    const uint8_t *excess_bytes = take(reader, packed_size(escapes, excess_width), field, " patch");
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

/* run_length_decode() of rle.py into `codes` (count bytes): the same checks in the same order,
 * with the same messages; -1 with CodecError (or MemoryError). */
static int decode_runs(const uint8_t *payload, uint64_t size, int bits, uint64_t count,
                       uint8_t *codes) {
    int result = -1;
    uint64_t *literal_counts = NULL, *run_lengths = NULL, *run_values = NULL;
    Reader reader = {payload, size, 0};
    int zero_code;
    uint64_t runs, trailing;
    if (read_u8(&reader, "zero code", "", &zero_code) < 0 ||
        read_varint(&reader, "run count", &runs) < 0 ||
        read_varint(&reader, "trailing literal count", &trailing) < 0) {
        goto done;
    }
    const uint64_t limit = 1ull << bits;
    if ((uint64_t)zero_code >= limit) {
        PyErr_Format(codec_error, "%s: zero code %d exceeds %d bits", PAYLOAD, zero_code, bits);
        goto done;
    }
    if (runs * MIN_RUN + trailing > count) {
        PyErr_Format(codec_error,
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
        PyErr_Format(codec_error,
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
        PyErr_Format(codec_error, "%s has %llu unexpected trailing bytes", PAYLOAD,
                     (unsigned long long)(reader.size - reader.offset));
        goto done;
    }
    if (too_wide) {
        PyErr_Format(codec_error, "%s: a code exceeds %d bits", PAYLOAD, bits);
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
    result = 0;
done:
    PyMem_Free(literal_counts);
    PyMem_Free(run_lengths);
    PyMem_Free(run_values);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * Module functions.
 */

static int check_bits(int bits) {
    if (bits < 1 || bits > 8) {
        PyErr_Format(PyExc_ValueError, "bits must be 1..8, got %d", bits);
        return -1;
    }
    return 0;
}

static int check_count(uint64_t count) {
    if (count > MAX_COUNT) {
        PyErr_Format(PyExc_ValueError, "at most %llu elements, got %llu",
                     (unsigned long long)MAX_COUNT, (unsigned long long)count);
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(run_length_encode_doc,
             "run_length_encode(codes, bits, zero_code)\n--\n\n"
             "splitrl.codecs.rle.run_length_encode for a contiguous uint8 buffer of codes.");

static PyObject *run_length_encode(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits, zero_code;
    PyObject *result = NULL;
    uint8_t *mapped = NULL;
    Runs runs = {0};
    if (!PyArg_ParseTuple(args, "y*ii", &buffer, &bits, &zero_code)) {
        return NULL;
    }
    const uint8_t *codes = buffer.buf;
    const size_t count = (size_t)buffer.len;
    if (check_bits(bits) < 0 || check_count(count) < 0) {
        goto done;
    }
    if (zero_code < 0 || zero_code > 255) {
        PyErr_Format(PyExc_ValueError, "zero_code must be in range(0, 256), got %d", zero_code);
        goto done;
    }
    if (zero_code) {
        mapped = map_codes(codes, count, bits, zero_code);
        if (mapped == NULL) {
            goto done;
        }
    }
    if (scan_runs(mapped ? mapped : codes, count, &runs) < 0) {
        goto done;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)runs.size);
    if (result != NULL) {
        write_runs((uint8_t *)PyBytes_AS_STRING(result), &runs, zero_code);
    }
done:
    PyMem_Free(runs.literal_counts);
    PyMem_Free(mapped);
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(run_length_decode_doc,
             "run_length_decode(payload, bits, count)\n--\n\n"
             "splitrl.codecs.rle.run_length_decode into a bytearray of `count` codes; raises\n"
             "CodecError with the same messages, checked in the same order.");

static PyObject *run_length_decode(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits;
    unsigned long long count;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*iK", &buffer, &bits, &count)) {
        return NULL;
    }
    if (check_bits(bits) == 0 && check_count(count) == 0) {
        result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
        if (result != NULL &&
            decode_runs(buffer.buf, (uint64_t)buffer.len, bits, count,
                        (uint8_t *)PyByteArray_AS_STRING(result)) < 0) {
            Py_CLEAR(result);
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(pack_codes_doc,
             "pack_codes(codes, width)\n--\n\n"
             "splitrl.codecs.bitpack.pack_bits for a contiguous uint8 buffer, width 1..8.");

static PyObject *pack_codes(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int width;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &width)) {
        return NULL;
    }
    if (check_bits(width) == 0) {
        const uint64_t size = packed_size((uint64_t)buffer.len, width);
        result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
        if (result != NULL) {
            pack_u8((uint8_t *)PyBytes_AS_STRING(result), buffer.buf, (size_t)buffer.len, width,
                    width_mask(width));
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(unpack_codes_doc,
             "unpack_codes(buffer, width, count)\n--\n\n"
             "splitrl.codecs.bitpack.unpack_bits for width 1..8, into a bytearray; the buffer\n"
             "must hold exactly the packed size (ValueError otherwise).");

static PyObject *unpack_codes(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int width;
    Py_ssize_t count;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*in", &buffer, &width, &count)) {
        return NULL;
    }
    if (check_bits(width) == 0) {
        if (count < 0 || (uint64_t)buffer.len != packed_size((uint64_t)count, width)) {
            PyErr_SetString(PyExc_ValueError, "the buffer does not hold count values of width bits");
        } else {
            result = PyByteArray_FromStringAndSize(NULL, count);
            if (result != NULL) {
                unpack_u8(buffer.buf, (size_t)count, width,
                          (uint8_t *)PyByteArray_AS_STRING(result));
            }
        }
    }
    PyBuffer_Release(&buffer);
    return result;
}

static uint32_t float_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

typedef struct {
    float lo, hi;
    int non_finite, positive_zero, negative_zero;
} FloatRange;

static void update_range(FloatRange *range, float value) {
    const uint32_t pattern = float_bits(value);
    range->lo = value < range->lo ? value : range->lo;
    range->hi = value > range->hi ? value : range->hi;
    range->non_finite |= (pattern & 0x7F800000u) == 0x7F800000u;
    range->positive_zero |= pattern == 0u;
    range->negative_zero |= pattern == 0x80000000u;
}

/* Minimum and maximum of a non-empty buffer, and whether it holds non-finite values, +0.0, -0.0. */
static FloatRange float_range(const float *values, size_t count) {
    FloatRange range = {values[0], values[0], 0, 0, 0};
    size_t index = 0;
#if defined(__SSE2__)
    /* minps and maxps select exactly like the scalar comparisons of update_range(). */
    const __m128i exponent = _mm_set1_epi32(0x7F800000), sign = _mm_set1_epi32(INT32_MIN);
    __m128 lo = _mm_set1_ps(values[0]), hi = lo;
    __m128i non_finite = _mm_setzero_si128(), positive_zero = non_finite, negative_zero = non_finite;
    for (; index + 4 <= count; index += 4) {
        const __m128 value = _mm_loadu_ps(values + index);
        const __m128i pattern = _mm_castps_si128(value);
        lo = _mm_min_ps(value, lo);
        hi = _mm_max_ps(value, hi);
        non_finite = _mm_or_si128(
            non_finite, _mm_cmpeq_epi32(_mm_and_si128(pattern, exponent), exponent));
        positive_zero = _mm_or_si128(positive_zero, _mm_cmpeq_epi32(pattern, _mm_setzero_si128()));
        negative_zero = _mm_or_si128(negative_zero, _mm_cmpeq_epi32(pattern, sign));
    }
    float lo_lanes[4], hi_lanes[4];
    _mm_storeu_ps(lo_lanes, lo);
    _mm_storeu_ps(hi_lanes, hi);
    for (int lane = 0; lane < 4; lane++) {
        update_range(&range, lo_lanes[lane]);
        update_range(&range, hi_lanes[lane]);
    }
    range.non_finite |= _mm_movemask_epi8(non_finite) != 0;
    range.positive_zero |= _mm_movemask_epi8(positive_zero) != 0;
    range.negative_zero |= _mm_movemask_epi8(negative_zero) != 0;
#endif
    for (; index < count; index++) {
        update_range(&range, values[index]);
    }
    return range;
}

/* numpy's min and max do not say which of +0.0 and -0.0 they return when both occur. */
static int zero_sign_is_ambiguous(float extreme, int positive_zero, int negative_zero) {
    return extreme == 0.0f && positive_zero && negative_zero;
}

static void quantize_codes(uint8_t *codes, const void *values, int is_float, size_t count,
                           float offset, float scale, int levels) {
    /* Adding and subtracting 1.5 * 2**23 rounds a float in [0, 2**22] to the nearest integer,
     * ties to even, like numpy's rint. The clamp keeps the value there; clamping before or
     * after rounding gives the same code. */
    const float magic = 12582912.0f, ceiling = (float)(levels + 1);
    size_t index = 0;
#if defined(__SSE2__)
    /* The same operations four lanes at a time: maxps, minps and the rounding pair select and
     * round exactly like the scalar expressions below. */
    if (is_float) {
        const float *floats = values;
        const __m128 lo = _mm_set1_ps(offset), step = _mm_set1_ps(scale), zero = _mm_setzero_ps();
        const __m128 top = _mm_set1_ps(ceiling), round = _mm_set1_ps(magic);
        const __m128 highest = _mm_set1_ps((float)levels);
        for (; index + 16 <= count; index += 16) {
            __m128i lanes[4];
            for (int quarter = 0; quarter < 4; quarter++) {
                __m128 scaled = _mm_div_ps(_mm_sub_ps(_mm_loadu_ps(floats + index + 4 * quarter), lo), step);
                scaled = _mm_min_ps(_mm_max_ps(scaled, zero), top);
                scaled = _mm_min_ps(_mm_sub_ps(_mm_add_ps(scaled, round), round), highest);
                lanes[quarter] = _mm_cvttps_epi32(scaled);
            }
            const __m128i low = _mm_packs_epi32(lanes[0], lanes[1]);
            const __m128i high = _mm_packs_epi32(lanes[2], lanes[3]);
            _mm_storeu_si128((__m128i *)(codes + index), _mm_packus_epi16(low, high));
        }
    }
#endif
    for (; index < count; index++) {
        const float x = is_float ? ((const float *)values)[index]
                                 : (float)((const uint8_t *)values)[index];
        float scaled = (x - offset) / scale;
        scaled = scaled > 0.0f ? scaled : 0.0f;
        scaled = scaled < ceiling ? scaled : ceiling;
        const float rounded = (scaled + magic) - magic;
        codes[index] = (uint8_t)(rounded < (float)levels ? rounded : (float)levels);
    }
}

/* The per-tensor min-max offset and scale of a non-empty float32 buffer, as quantize.py computes
 * them; 0 where numpy's result cannot be reproduced exactly (non-finite values or range, or
 * both signed zeros at an end of the range). */
static int float32_parameters(const float *values, size_t count, int bits, float *offset,
                              float *scale) {
    const FloatRange range = float_range(values, count);
    const float lo = range.lo, hi = range.hi;
    const float step = (hi - lo) / (float)((1 << bits) - 1);
    *offset = lo;
    *scale = step > 0.0f ? step : 1.0f;
    return !(range.non_finite || (float_bits(*scale) & 0x7F800000u) == 0x7F800000u ||
             zero_sign_is_ambiguous(lo, range.positive_zero, range.negative_zero) ||
             zero_sign_is_ambiguous(hi, range.positive_zero, range.negative_zero));
}

PyDoc_STRVAR(quantize_float32_doc,
             "quantize_float32(values, bits)\n--\n\n"
             "Per-tensor min-max quantization of a contiguous float32 buffer without clipping,\n"
             "as splitrl.codecs.quantize.quantize: (codes as a bytearray, offset, scale), or None\n"
             "where numpy's result cannot be reproduced exactly (non-finite values or range, or\n"
             "both signed zeros at an end of the range).");

static PyObject *quantize_float32(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &bits)) {
        return NULL;
    }
    const size_t count = (size_t)buffer.len / sizeof(float);
    const float *values = buffer.buf;
    if (check_bits(bits) < 0) {
        goto done;
    }
    if (count == 0 || buffer.len % sizeof(float)) {
        PyErr_SetString(PyExc_ValueError, "values must be a non-empty float32 buffer");
        goto done;
    }
    float lo, scale;
    if (!float32_parameters(values, count, bits, &lo, &scale)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *codes = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
    if (codes == NULL) {
        goto done;
    }
    quantize_codes((uint8_t *)PyByteArray_AS_STRING(codes), values, 1, count, lo, scale,
                   (1 << bits) - 1);
    result = Py_BuildValue("Ndd", codes, (double)lo, (double)scale);
done:
    PyBuffer_Release(&buffer);
    return result;
}

PyDoc_STRVAR(quantize_uint8_doc,
             "quantize_uint8(values, bits)\n--\n\n"
             "Per-tensor quantization of a non-empty contiguous uint8 buffer with the integer step\n"
             "of splitrl.codecs.quantize.quantize: (codes as a bytearray, offset, scale).");

static PyObject *quantize_uint8(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    int bits;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*i", &buffer, &bits)) {
        return NULL;
    }
    const size_t count = (size_t)buffer.len;
    const uint8_t *values = buffer.buf;
    if (check_bits(bits) < 0) {
        goto done;
    }
    if (count == 0) {
        PyErr_SetString(PyExc_ValueError, "values must be a non-empty uint8 buffer");
        goto done;
    }
    uint8_t lo = values[0], hi = values[0];
    for (size_t index = 0; index < count; index++) {
        lo = values[index] < lo ? values[index] : lo;
        hi = values[index] > hi ? values[index] : hi;
    }
    const int levels = (1 << bits) - 1;
    const float steps = ceilf(((float)hi - (float)lo) / (float)levels);
    const float scale = steps > 1.0f ? steps : 1.0f;
    PyObject *codes = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
    if (codes == NULL) {
        goto done;
    }
    quantize_codes((uint8_t *)PyByteArray_AS_STRING(codes), values, 0, count, (float)lo, scale,
                   levels);
    result = Py_BuildValue("Ndd", codes, (double)lo, (double)scale);
done:
    PyBuffer_Release(&buffer);
    return result;
}

/* float32 offset + code * scale for every code (quantize.dequantize with float32 parameters). */
static void dequantize_codes(float *out, const uint8_t *codes, size_t count, float offset,
                             float scale, int distinct) {
    size_t index = 0;
#if defined(__SSE2__)
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

PyDoc_STRVAR(dequantize_float32_doc,
             "dequantize_float32(codes, offset, scale)\n--\n\n"
             "float32 offset + code * scale for every uint8 code (float32 arithmetic, as\n"
             "splitrl.codecs.quantize.dequantize with float32 parameters), into a bytearray.");

static PyObject *dequantize_float32(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    float offset, scale;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "y*ff", &buffer, &offset, &scale)) {
        return NULL;
    }
    result = PyByteArray_FromStringAndSize(NULL, buffer.len * (Py_ssize_t)sizeof(float));
    if (result != NULL) {
        dequantize_codes((float *)PyByteArray_AS_STRING(result), buffer.buf, (size_t)buffer.len,
                         offset, scale, 256);
    }
    PyBuffer_Release(&buffer);
    return result;
}

/* ---------------------------------------------------------------------------------------------
 * Whole frames of the common case (frame.py, codec.py): a float32 tensor, per-tensor min-max
 * quantizer, run-length or bit-packed codes, no entropy stage. Anything else, and any frame
 * whose header the reference would refuse, is left to the Python code (these return None).
 */

#define FRAME_VERSION 1
#define CODING_BIT_PACKED 1
#define CODING_RUN_LENGTH 2
#define DTYPE_FLOAT32 10
#define MAX_NDIM 8
#define FIXED_HEADER 11

static PyObject *crc32_function = NULL; /* zlib.crc32 */

static void store_u32(uint8_t *out, uint32_t value) {
    out[0] = (uint8_t)value;
    out[1] = (uint8_t)(value >> 8);
    out[2] = (uint8_t)(value >> 16);
    out[3] = (uint8_t)(value >> 24);
}

static uint32_t load_u32(const uint8_t *in) {
    return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
}

static float load_f32(const uint8_t *in) {
    const uint32_t bits = load_u32(in);
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* zlib.crc32 of the `checked` header bytes, then of the payload; -1 with an exception. */
static int frame_crc(const uint8_t *frame, size_t checked, const uint8_t *payload, size_t size,
                     uint32_t *crc) {
    PyObject *value = NULL;
    const struct {
        const uint8_t *data;
        size_t size;
    } parts[2] = {{frame, checked}, {payload, size}};
    for (int part = 0; part < 2; part++) {
        PyObject *view = PyMemoryView_FromMemory((char *)parts[part].data,
                                                 (Py_ssize_t)parts[part].size, PyBUF_READ);
        if (view == NULL) {
            Py_XDECREF(value);
            return -1;
        }
        PyObject *next = value ? PyObject_CallFunctionObjArgs(crc32_function, view, value, NULL)
                               : PyObject_CallFunctionObjArgs(crc32_function, view, NULL);
        Py_DECREF(view);
        Py_XDECREF(value);
        if (next == NULL) {
            return -1;
        }
        value = next;
    }
    *crc = (uint32_t)PyLong_AsUnsignedLong(value);
    Py_DECREF(value);
    return PyErr_Occurred() ? -1 : 0;
}

/* The parameters decode to finite float32 values (frame.check_parameters). */
static int parameters_are_finite(float offset, float scale, int bits) {
    const float span = scale * (float)((1 << bits) - 1);
    const float top = offset + span;
    return scale > 0.0f && isfinite(offset) && isfinite(span) && isfinite(top);
}

PyDoc_STRVAR(encode_float32_frame_doc,
             "encode_float32_frame(array, bits, max_elements)\n--\n\n"
             "The frame splitrl.codecs.encode(array, bits) makes for a non-empty C-contiguous\n"
             "float32 array of at most max_elements elements (per-tensor quantizer, run-length\n"
             "coding, no entropy stage), byte for byte; None where the Python code must run.");

static PyObject *encode_float32_frame(PyObject *self, PyObject *args) {
    PyObject *array, *result = NULL;
    int bits;
    unsigned long long max_elements;
    Py_buffer view;
    uint8_t *codes = NULL, *mapped = NULL;
    Runs runs = {0};
    if (!PyArg_ParseTuple(args, "OiK", &array, &bits, &max_elements)) {
        return NULL;
    }
    if (bits < 1 || bits > 8) {
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(array, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    int supported = view.itemsize == 4 && view.format != NULL && strcmp(view.format, "f") == 0 &&
                    view.ndim <= MAX_NDIM;
    uint64_t count = 1;
    for (int axis = 0; supported && axis < view.ndim; axis++) {
        count *= (uint64_t)view.shape[axis];
        supported = count > 0 && count <= max_elements && count <= MAX_COUNT;
    }
    const float *values = view.buf;
    float offset, scale;
    if (!supported || !float32_parameters(values, count, bits, &offset, &scale) ||
        !parameters_are_finite(offset, scale, bits)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const int levels = (1 << bits) - 1;
    codes = PyMem_Malloc(count);
    if (codes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    quantize_codes(codes, values, 1, count, offset, scale, levels);
    /* quantize.zero_code(): the code of 0.0 */
    float zero = rintf(-offset / scale);
    zero = zero > 0.0f ? zero : 0.0f;
    const int zero_code = (int)(zero < (float)levels ? zero : (float)levels);
    if (zero_code) {
        mapped = map_codes(codes, count, bits, zero_code);
        if (mapped == NULL) {
            goto done;
        }
    }
    if (scan_runs(mapped ? mapped : codes, count, &runs) < 0) {
        goto done;
    }
    const uint64_t packed = packed_size(count, bits);
    const int run_length = runs.size < packed;
    const uint64_t payload_size = run_length ? runs.size : packed;
    const size_t header = FIXED_HEADER + 4 * (size_t)view.ndim + 16;
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(header + payload_size));
    if (result == NULL) {
        goto done;
    }
    uint8_t *frame = (uint8_t *)PyBytes_AS_STRING(result);
    const uint8_t fixed[FIXED_HEADER] = {
        'S', 'P', 'L', 'C', FRAME_VERSION, run_length ? CODING_RUN_LENGTH : CODING_BIT_PACKED,
        0,   DTYPE_FLOAT32, (uint8_t)bits, DTYPE_FLOAT32, (uint8_t)view.ndim};
    memcpy(frame, fixed, FIXED_HEADER);
    for (int axis = 0; axis < view.ndim; axis++) {
        store_u32(frame + FIXED_HEADER + 4 * axis, (uint32_t)view.shape[axis]);
    }
    store_u32(frame + header - 16, float_bits(offset));
    store_u32(frame + header - 12, float_bits(scale));
    store_u32(frame + header - 8, (uint32_t)payload_size);
    uint8_t *payload = frame + header;
    if (run_length) {
        write_runs(payload, &runs, zero_code);
    } else {
        pack_u8(payload, codes, count, bits, (uint32_t)levels);
    }
    uint32_t crc;
    if (frame_crc(frame, header - 4, payload, payload_size, &crc) < 0) {
        Py_CLEAR(result);
        goto done;
    }
    store_u32(frame + header - 4, crc);
done:
    PyMem_Free(runs.literal_counts);
    PyMem_Free(mapped);
    PyMem_Free(codes);
    PyBuffer_Release(&view);
    return result;
}

PyDoc_STRVAR(decode_float32_frame_doc,
             "decode_float32_frame(frame, max_elements, expected_shape)\n--\n\n"
             "(shape, float32 values as a bytearray) of a frame that encode_float32_frame could\n"
             "have made, holding at most max_elements elements and of shape expected_shape unless\n"
             "that is None; None for any other frame, including one the header checks of\n"
             "splitrl.codecs.frame would refuse. A bad run-length payload raises CodecError\n"
             "with the message of the reference.");

static PyObject *decode_float32_frame(PyObject *self, PyObject *args) {
    Py_buffer buffer;
    unsigned long long max_elements;
    PyObject *expected_shape, *shape = NULL, *values = NULL, *result = NULL;
    uint8_t *codes = NULL;
    if (!PyArg_ParseTuple(args, "y*KO", &buffer, &max_elements, &expected_shape)) {
        return NULL;
    }
    const uint8_t *frame = buffer.buf;
    const size_t size = (size_t)buffer.len;
    const int ndim = size >= FIXED_HEADER ? frame[10] : 0;
    const size_t header = FIXED_HEADER + 4 * (size_t)ndim + 16;
    const int bits = size >= FIXED_HEADER ? frame[8] : 0;
    if (size < FIXED_HEADER || memcmp(frame, "SPLC", 4) != 0 || frame[4] != FRAME_VERSION ||
        (frame[5] != CODING_BIT_PACKED && frame[5] != CODING_RUN_LENGTH) || frame[6] != 0 ||
        frame[7] != DTYPE_FLOAT32 || bits < 1 || bits > 8 || frame[9] != DTYPE_FLOAT32 ||
        ndim > MAX_NDIM || size < header) {
        goto none;
    }
    uint64_t count = 1;
    shape = PyTuple_New(ndim);
    if (shape == NULL) {
        goto done;
    }
    for (int axis = 0; axis < ndim; axis++) {
        const uint32_t extent = load_u32(frame + FIXED_HEADER + 4 * axis);
        count *= extent;
        if (count == 0 || count > max_elements || count > MAX_COUNT) {
            goto none;
        }
        PyObject *item = PyLong_FromUnsignedLong(extent);
        if (item == NULL) {
            goto done;
        }
        PyTuple_SET_ITEM(shape, axis, item);
    }
    if (expected_shape != Py_None) {
        const int same = PyObject_RichCompareBool(shape, expected_shape, Py_EQ);
        if (same < 0) {
            goto done;
        }
        if (!same) {
            goto none;
        }
    }
    const float offset = load_f32(frame + header - 16), scale = load_f32(frame + header - 12);
    const uint8_t *payload = frame + header;
    const uint64_t payload_size = size - header;
    uint32_t crc;
    if (!parameters_are_finite(offset, scale, bits) ||
        load_u32(frame + header - 8) != payload_size) {
        goto none;
    }
    if (frame_crc(frame, header - 4, payload, payload_size, &crc) < 0) {
        goto done;
    }
    if (crc != load_u32(frame + header - 4) ||
        (frame[5] == CODING_BIT_PACKED && payload_size != packed_size(count, bits))) {
        goto none;
    }
    codes = PyMem_Malloc(count);
    values = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(count * sizeof(float)));
    if (codes == NULL || values == NULL) {
        if (codes == NULL) {
            PyErr_NoMemory();
        }
        goto done;
    }
    if (frame[5] == CODING_RUN_LENGTH) {
        if (decode_runs(payload, payload_size, bits, count, codes) < 0) {
            goto done;
        }
    } else {
        unpack_u8(payload, count, bits, codes);
    }
    dequantize_codes((float *)PyByteArray_AS_STRING(values), codes, count, offset, scale,
                     1 << bits);
    result = PyTuple_Pack(2, shape, values);
    goto done;
none:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(codes);
    Py_XDECREF(shape);
    Py_XDECREF(values);
    PyBuffer_Release(&buffer);
    return result;
}

static PyMethodDef methods[] = {
    {"run_length_encode", run_length_encode, METH_VARARGS, run_length_encode_doc},
    {"run_length_decode", run_length_decode, METH_VARARGS, run_length_decode_doc},
    {"pack_codes", pack_codes, METH_VARARGS, pack_codes_doc},
    {"unpack_codes", unpack_codes, METH_VARARGS, unpack_codes_doc},
    {"quantize_float32", quantize_float32, METH_VARARGS, quantize_float32_doc},
    {"quantize_uint8", quantize_uint8, METH_VARARGS, quantize_uint8_doc},
    {"dequantize_float32", dequantize_float32, METH_VARARGS, dequantize_float32_doc},
    {"encode_float32_frame", encode_float32_frame, METH_VARARGS, encode_float32_frame_doc},
    {"decode_float32_frame", decode_float32_frame, METH_VARARGS, decode_float32_frame_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "splitrl.codecs._kernels",
    "Compiled kernels of splitrl.codecs (the numpy modules are the reference).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) {
    PyObject *errors = PyImport_ImportModule("splitrl.codecs.errors");
    if (errors == NULL) {
        return NULL;
    }
    codec_error = PyObject_GetAttrString(errors, "CodecError");
    Py_DECREF(errors);
    if (codec_error == NULL) {
        return NULL;
    }
    PyObject *zlib = PyImport_ImportModule("zlib");
    if (zlib == NULL) {
        return NULL;
    }
    crc32_function = PyObject_GetAttrString(zlib, "crc32");
    Py_DECREF(zlib);
    if (crc32_function == NULL) {
        return NULL;
    }
    PyObject *kernels = PyModule_Create(&module);
    if (kernels == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(kernels, "MAX_COUNT", (long)MAX_COUNT) < 0) {
        Py_DECREF(kernels);
        return NULL;
    }
    return kernels;
}
