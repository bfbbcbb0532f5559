/*
 * Compiled kernels of the codec's hot loops: run-length coding with patched bit-packing
 * (splitrl/codecs/rle.py, patched.py), fixed-width packing of uint8 codes (bitpack.py) and the
 * per-tensor quantizer and dequantizer of float32 tensors (quantize.py).
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

static void pack_u8(uint8_t *out, const uint8_t *values, size_t count, int width) {
    size_t index = 0;
    if (width == 8) {
        memcpy(out, values, count);
        return;
    }
    for (; index + 8 <= count; index += 8) {
        uint64_t word = 0;
        for (int j = 0; j < 8; j++) {
            word = (word << width) | (values[index + j] & width_mask(width));
        }
        for (int byte = width - 1; byte >= 0; byte--) {
            *out++ = (uint8_t)(word >> (8 * byte));
        }
    }
    BitWriter writer = {out, 0, 0};
    for (; index < count; index++) {
        put_bits(&writer, values[index], width);
    }
    flush_bits(&writer);
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

/* ---------------------------------------------------------------------------------------------
 * Patched streams (patched.py): k (1 byte), k2 (1 byte), values at k bits with the escape
 * symbol 2**k - 1 for those that do not fit, then the excesses at k2 bits.
 */

typedef struct {
    int width;
    int excess_width;
    uint64_t escapes;
} StreamWidths;

/* choose_widths() of patched.py, ties included: the narrowest width of minimal size wins. */
static StreamWidths choose_widths(const uint32_t *values, size_t count) {
    StreamWidths best = {0, 0, 0};
    /* four partial histograms, so that consecutive increments do not wait on each other */
    uint64_t partial[4][MAX_WIDTH + 2] = {{0}};
    uint64_t histogram[MAX_WIDTH + 2] = {0};
    uint32_t largest = 0;
    if (count == 0) {
        return best;
    }
    for (size_t index = 0; index < count; index++) {
        partial[index & 3][bit_length((uint64_t)values[index] + 1)]++;
        largest = values[index] > largest ? values[index] : largest;
    }
    for (int length = 0; length < MAX_WIDTH + 2; length++) {
        histogram[length] = partial[0][length] + partial[1][length] + partial[2][length] +
                            partial[3][length];
    }
    const int lengths = bit_length((uint64_t)largest + 1) + 1;
    uint64_t best_size = (uint64_t)count * (uint64_t)lengths;
    uint64_t fitting = 0;
    for (int width = 0; width < lengths; width++) {
        fitting += histogram[width];
        const uint64_t escapes = count - fitting;
        const uint64_t escape = (1ull << width) - 1;
        const int excess_width = escapes && largest > escape ? bit_length(largest - escape) : 0;
        const uint64_t size = (uint64_t)count * width + escapes * excess_width;
        if (size < best_size) {
            best_size = size;
            best.width = width;
            best.excess_width = excess_width;
            best.escapes = escapes;
        }
    }
    return best;
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
    if (widths.escapes) {
        BitWriter writer = {out, 0, 0};
        for (size_t index = 0; index < count; index++) {
            if (values[index] >= escape) {
                put_bits(&writer, values[index] - escape, widths.excess_width);
            }
        }
        flush_bits(&writer);
        out = writer.out;
    }
    return out;
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
    uint32_t *streams = NULL;
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
    /* literals (up to count values), literal counts, run lengths and run values (up to
     * count / MIN_RUN each), then the mapped codes where the zero code is not 0 */
    const size_t max_runs = count / MIN_RUN;
    streams = PyMem_Malloc((count + 3 * max_runs + 1) * sizeof(uint32_t) + count);
    if (streams == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    uint32_t *literals = streams;
    uint32_t *literal_counts = literals + count;
    uint32_t *run_lengths = literal_counts + max_runs;
    uint32_t *run_values = run_lengths + max_runs;
    const uint8_t *mapped = codes;
    if (zero_code) {
        uint8_t *shifted = (uint8_t *)(run_values + max_runs);
        const uint8_t mask = (uint8_t)((1u << bits) - 1u), zero = (uint8_t)zero_code;
        for (size_t index = 0; index < count; index++) {
            shifted[index] = (uint8_t)(codes[index] - zero) & mask;
        }
        mapped = shifted;
    }
    size_t literal_total = 0, runs = 0, last_run_end = 0, index = 0;
    while (index < count) {
        /* Three equal codes at a position where the test failed one position earlier (or right
         * after a run, or at the start) always begin a maximal run. */
        while (index + 2 < count &&
               !((mapped[index] == mapped[index + 1]) & (mapped[index + 1] == mapped[index + 2]))) {
            literals[literal_total++] = mapped[index++];
        }
        if (index + 2 >= count) {
            while (index < count) {
                literals[literal_total++] = mapped[index++];
            }
            break;
        }
        size_t end = index + MIN_RUN;
        while (end < count && mapped[end] == mapped[index]) {
            end++;
        }
        literal_counts[runs] = (uint32_t)(index - last_run_end);
        run_lengths[runs] = (uint32_t)(end - index - MIN_RUN);
        run_values[runs] = mapped[index];
        runs++;
        last_run_end = index = end;
    }
    const size_t trailing = count - last_run_end;
    const StreamWidths widths[4] = {
        choose_widths(literal_counts, runs),
        choose_widths(run_lengths, runs),
        choose_widths(run_values, runs),
        choose_widths(literals, literal_total),
    };
    uint8_t varints[20];
    const size_t varint_bytes =
        (size_t)(write_varint(write_varint(varints, runs), trailing) - varints);
    const uint64_t size = 1 + varint_bytes + stream_size(runs, widths[0]) +
                          stream_size(runs, widths[1]) + stream_size(runs, widths[2]) +
                          stream_size(literal_total, widths[3]);
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (result == NULL) {
        goto done;
    }
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(result);
    *out++ = (uint8_t)zero_code;
    memcpy(out, varints, varint_bytes);
    out += varint_bytes;
    out = write_stream(out, literal_counts, runs, widths[0]);
    out = write_stream(out, run_lengths, runs, widths[1]);
    out = write_stream(out, run_values, runs, widths[2]);
    write_stream(out, literals, literal_total, widths[3]);
done:
    PyMem_Free(streams);
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
    uint64_t *literal_counts = NULL, *run_lengths = NULL, *run_values = NULL, *literals = NULL;
    if (!PyArg_ParseTuple(args, "y*iK", &buffer, &bits, &count)) {
        return NULL;
    }
    if (check_bits(bits) < 0 || check_count(count) < 0) {
        goto done;
    }
    Reader reader = {buffer.buf, (uint64_t)buffer.len, 0};
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
                     PAYLOAD, (unsigned long long)runs, (unsigned long long)trailing, count);
        goto done;
    }
    if (read_stream(&reader, runs, "literal counts", &literal_counts) < 0 ||
        read_stream(&reader, runs, "run lengths", &run_lengths) < 0 ||
        read_stream(&reader, runs, "run values", &run_values) < 0) {
        goto done;
    }
    /* Stream values are below 2**33 and runs <= count / 3 <= 2**30 / 3: no sum overflows. */
    uint64_t total = trailing, run_total = 0;
    for (uint64_t index = 0; index < runs; index++) {
        run_lengths[index] += MIN_RUN;
        run_total += run_lengths[index];
        total += literal_counts[index];
    }
    total += run_total;
    if (total != count) {
        PyErr_Format(codec_error,
                     "%s: runs and literals cover %llu elements, the header says %llu", PAYLOAD,
                     (unsigned long long)total, count);
        goto done;
    }
    const uint64_t literal_total = count - run_total;
    if (read_stream(&reader, literal_total, "literals", &literals) < 0) {
        goto done;
    }
    if (reader.offset != reader.size) {
        PyErr_Format(codec_error, "%s has %llu unexpected trailing bytes", PAYLOAD,
                     (unsigned long long)(reader.size - reader.offset));
        goto done;
    }
    for (uint64_t index = 0; index < runs; index++) {
        if (run_values[index] >= limit) {
            goto code_too_wide;
        }
    }
    for (uint64_t index = 0; index < literal_total; index++) {
        if (literals[index] >= limit) {
            goto code_too_wide;
        }
    }
    result = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
    if (result == NULL) {
        goto done;
    }
    /* The counts add up to `count` exactly (checked above), so every write is in bounds. */
    uint8_t *codes = (uint8_t *)PyByteArray_AS_STRING(result);
    const uint8_t zero = (uint8_t)zero_code, mask = (uint8_t)(limit - 1);
    const uint64_t *literal = literals;
    for (uint64_t index = 0; index < runs; index++) {
        for (uint64_t step = 0; step < literal_counts[index]; step++) {
            *codes++ = (uint8_t)(*literal++ + zero) & mask;
        }
        memset(codes, (uint8_t)(run_values[index] + zero) & mask, run_lengths[index]);
        codes += run_lengths[index];
    }
    for (uint64_t step = 0; step < trailing; step++) {
        *codes++ = (uint8_t)(*literal++ + zero) & mask;
    }
    goto done;
code_too_wide:
    PyErr_Format(codec_error, "%s: a code exceeds %d bits", PAYLOAD, bits);
done:
    PyMem_Free(literal_counts);
    PyMem_Free(run_lengths);
    PyMem_Free(run_values);
    PyMem_Free(literals);
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
            pack_u8((uint8_t *)PyBytes_AS_STRING(result), buffer.buf, (size_t)buffer.len, width);
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
    for (size_t index = 0; index < count; index++) {
        const float x = is_float ? ((const float *)values)[index]
                                 : (float)((const uint8_t *)values)[index];
        float scaled = (x - offset) / scale;
        scaled = scaled > 0.0f ? scaled : 0.0f;
        scaled = scaled < ceiling ? scaled : ceiling;
        const float rounded = (scaled + magic) - magic;
        codes[index] = (uint8_t)(rounded < (float)levels ? rounded : (float)levels);
    }
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
    const FloatRange range = float_range(values, count);
    const float lo = range.lo, hi = range.hi;
    const int levels = (1 << bits) - 1;
    float scale = (hi - lo) / (float)levels;
    scale = scale > 0.0f ? scale : 1.0f;
    if (range.non_finite || (float_bits(scale) & 0x7F800000u) == 0x7F800000u ||
        zero_sign_is_ambiguous(lo, range.positive_zero, range.negative_zero) ||
        zero_sign_is_ambiguous(hi, range.positive_zero, range.negative_zero)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    PyObject *codes = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)count);
    if (codes == NULL) {
        goto done;
    }
    quantize_codes((uint8_t *)PyByteArray_AS_STRING(codes), values, 1, count, lo, scale, levels);
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
    float table[256];
    for (int code = 0; code < 256; code++) {
        const float product = (float)code * scale;
        table[code] = product + offset;
    }
    result = PyByteArray_FromStringAndSize(NULL, buffer.len * (Py_ssize_t)sizeof(float));
    if (result != NULL) {
        float *out = (float *)PyByteArray_AS_STRING(result);
        const uint8_t *codes = buffer.buf;
        for (Py_ssize_t index = 0; index < buffer.len; index++) {
            out[index] = table[codes[index]];
        }
    }
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
