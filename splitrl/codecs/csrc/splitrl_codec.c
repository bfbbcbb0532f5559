/*
 * The encoder side of the codec's C core (splitrl_codec.h): bit-packing, patched streams,
 * run-length coding, the per-tensor quantizer, CRC32 and whole float32 frames. C99 without
 * malloc, I/O or libm, so that a device's encoder library is this file.
 *
 * The numpy modules of splitrl.codecs are the reference: every function here produces the same
 * bytes. float arithmetic must be IEEE single precision without contraction into fused
 * multiply-adds (-ffp-contract=off), or the quantizer would not match numpy bit for bit.
 */
#include "splitrl_codec_internal.h"

uint64_t splitrl_packed_size(uint64_t count, int width) {
    return (count * (uint64_t)width + 7) / 8;
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

/* Packs min(values[i], ceiling) at width bits (0..32); returns the end of the written bytes.
 * Up to 8 bits, eight values fill exactly `width` bytes; bytes at 8 bits are copied (their
 * ceiling, 255, caps nothing). */
#define DEFINE_PACK(name, type)                                                                \
    static uint8_t *name(uint8_t *out, const type *values, size_t count, int width,            \
                         uint32_t ceiling) {                                                   \
        size_t index = 0;                                                                      \
        if (width == 0 || count == 0) {                                                        \
            return out;                                                                        \
        }                                                                                      \
        if (sizeof(type) == 1 && width == 8) {                                                 \
            memcpy(out, values, count);                                                        \
            return out + count;                                                                \
        }                                                                                      \
        if (width <= 8) {                                                                      \
            for (; index + 8 <= count; index += 8) {                                           \
                uint64_t word = 0;                                                             \
                for (int j = 0; j < 8; j++) {                                                  \
                    const uint32_t value =                                                     \
                        values[index + j] < ceiling ? values[index + j] : ceiling;             \
                    word = (word << width) | (value & width_mask(width));                      \
                }                                                                              \
                for (int byte = width - 1; byte >= 0; byte--) {                                \
                    *out++ = (uint8_t)(word >> (8 * byte));                                    \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        BitWriter writer = {out, 0, 0};                                                        \
        for (; index < count; index++) {                                                       \
            put_bits(&writer, values[index] < ceiling ? values[index] : ceiling, width);       \
        }                                                                                      \
        flush_bits(&writer);                                                                   \
        return writer.out;                                                                     \
    }
DEFINE_PACK(pack_u32, uint32_t)
DEFINE_PACK(pack_u8, uint8_t)

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

/* The widths of minimal size from the histogram of bit_length(value + 1), as choose_widths() of
 * patched.py, ties included: the narrowest width of minimal size wins. */
static SplitrlStreamWidths select_widths(const uint64_t *histogram, uint64_t count, uint32_t largest) {
    SplitrlStreamWidths best = {0, 0, 0};
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

static SplitrlStreamWidths choose_widths(const uint32_t *values, size_t count) {
    /* four partial histograms, so that consecutive increments do not wait on each other */
    uint64_t partial[4][MAX_WIDTH + 2] = {{0}};
    uint64_t histogram[MAX_WIDTH + 2] = {0};
    uint32_t largest = 0;
    if (count == 0) {
        return (SplitrlStreamWidths){0, 0, 0};
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
static SplitrlStreamWidths choose_widths_u8(const uint8_t *values, size_t count) {
    enum { SMALL = 512 }; /* below this, clearing the 256-value tables costs more than it saves */
    uint64_t partial[4][256];
    uint64_t histogram[MAX_WIDTH + 2] = {0};
    uint32_t largest = 0;
    if (count < SMALL) {
        for (size_t index = 0; index < count; index++) {
            histogram[bit_length((uint64_t)values[index] + 1)]++;
            largest = values[index] > largest ? values[index] : largest;
        }
        return count ? select_widths(histogram, count, largest) : (SplitrlStreamWidths){0, 0, 0};
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

static uint64_t stream_size(size_t count, SplitrlStreamWidths widths) {
    return 2 + splitrl_packed_size(count, widths.width) + splitrl_packed_size(widths.escapes, widths.excess_width);
}

static uint8_t *write_stream(uint8_t *out, const uint32_t *values, size_t count,
                             SplitrlStreamWidths widths) {
    const uint32_t escape = width_mask(widths.width);
    *out++ = (uint8_t)widths.width;
    *out++ = (uint8_t)widths.excess_width;
    out = pack_u32(out, values, count, widths.width, escape);
    return widths.escapes ? write_excesses_u32(out, values, count, escape, widths.excess_width)
                          : out;
}

static uint8_t *write_stream_u8(uint8_t *out, const uint8_t *values, size_t count,
                                SplitrlStreamWidths widths) {
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

/* The workspace of splitrl_scan_runs(): three streams of count / MIN_RUN words, then the literals
 * (count bytes and 8 of slack for word-at-a-time copies), then the mapped codes (count bytes). */
void splitrl_scan_runs(const uint8_t *codes, size_t count, int bits, int zero_code,
                       uint32_t *workspace, SplitrlRuns *runs) {
    const size_t max_runs = count / MIN_RUN;
    runs->literal_counts = workspace;
    runs->run_lengths = workspace + max_runs;
    runs->run_values = workspace + 2 * max_runs;
    runs->literals = (uint8_t *)(workspace + 3 * max_runs);
    runs->zero_code = zero_code;
    const uint8_t *mapped = codes;
    if (zero_code) {
        /* (code - zero_code) mod 2**bits for every code */
        uint8_t *shifted = runs->literals + count + 8;
        const uint8_t mask = (uint8_t)((1u << bits) - 1u), zero = (uint8_t)zero_code;
        for (size_t index = 0; index < count; index++) {
            shifted[index] = (uint8_t)(codes[index] - zero) & mask;
        }
        mapped = shifted;
    }
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
}

uint8_t *splitrl_write_runs(uint8_t *out, const SplitrlRuns *runs) {
    *out++ = (uint8_t)runs->zero_code;
    out = write_varint(write_varint(out, runs->runs), runs->trailing);
    out = write_stream(out, runs->literal_counts, runs->runs, runs->widths[0]);
    out = write_stream(out, runs->run_lengths, runs->runs, runs->widths[1]);
    out = write_stream(out, runs->run_values, runs->runs, runs->widths[2]);
    return write_stream_u8(out, runs->literals, runs->literal_total, runs->widths[3]);
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
#ifdef SPLITRL_SSE2
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

void splitrl_quantize(uint8_t *codes, const void *values, int is_float, size_t count,
                           float offset, float scale, int levels) {
    /* Adding and subtracting 1.5 * 2**23 rounds a float in [0, 2**22] to the nearest integer,
     * ties to even, like numpy's rint. The clamp keeps the value there; clamping before or
     * after rounding gives the same code. */
    const float magic = 12582912.0f, ceiling = (float)(levels + 1);
    size_t index = 0;
#ifdef SPLITRL_SSE2
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

int splitrl_float32_parameters(const float *values, size_t count, int bits, float *offset,
                              float *scale) {
    const FloatRange range = float_range(values, count);
    const float lo = range.lo, hi = range.hi;
    const float step = (hi - lo) / (float)((1 << bits) - 1);
    *offset = lo;
    *scale = step > 0.0f ? step : 1.0f;
    return !(range.non_finite || !is_finite_float(*scale) ||
             zero_sign_is_ambiguous(lo, range.positive_zero, range.negative_zero) ||
             zero_sign_is_ambiguous(hi, range.positive_zero, range.negative_zero));
}

uint8_t *splitrl_pack_codes(uint8_t *out, const uint8_t *codes, size_t count, int width) {
    return pack_u8(out, codes, count, width, width_mask(width));
}

/* ---------------------------------------------------------------------------------------------
 * CRC32 and whole frames of the common case (frame.py, codec.py): a float32 tensor, per-tensor
 * min-max quantizer, run-length or bit-packed codes, no entropy stage.
 */

static const uint32_t CRC_TABLE[256] = {
    0x00000000u, 0x77073096u, 0xEE0E612Cu, 0x990951BAu, 0x076DC419u, 0x706AF48Fu,
    0xE963A535u, 0x9E6495A3u, 0x0EDB8832u, 0x79DCB8A4u, 0xE0D5E91Eu, 0x97D2D988u,
    0x09B64C2Bu, 0x7EB17CBDu, 0xE7B82D07u, 0x90BF1D91u, 0x1DB71064u, 0x6AB020F2u,
    0xF3B97148u, 0x84BE41DEu, 0x1ADAD47Du, 0x6DDDE4EBu, 0xF4D4B551u, 0x83D385C7u,
    0x136C9856u, 0x646BA8C0u, 0xFD62F97Au, 0x8A65C9ECu, 0x14015C4Fu, 0x63066CD9u,
    0xFA0F3D63u, 0x8D080DF5u, 0x3B6E20C8u, 0x4C69105Eu, 0xD56041E4u, 0xA2677172u,
    0x3C03E4D1u, 0x4B04D447u, 0xD20D85FDu, 0xA50AB56Bu, 0x35B5A8FAu, 0x42B2986Cu,
    0xDBBBC9D6u, 0xACBCF940u, 0x32D86CE3u, 0x45DF5C75u, 0xDCD60DCFu, 0xABD13D59u,
    0x26D930ACu, 0x51DE003Au, 0xC8D75180u, 0xBFD06116u, 0x21B4F4B5u, 0x56B3C423u,
    0xCFBA9599u, 0xB8BDA50Fu, 0x2802B89Eu, 0x5F058808u, 0xC60CD9B2u, 0xB10BE924u,
    0x2F6F7C87u, 0x58684C11u, 0xC1611DABu, 0xB6662D3Du, 0x76DC4190u, 0x01DB7106u,
    0x98D220BCu, 0xEFD5102Au, 0x71B18589u, 0x06B6B51Fu, 0x9FBFE4A5u, 0xE8B8D433u,
    0x7807C9A2u, 0x0F00F934u, 0x9609A88Eu, 0xE10E9818u, 0x7F6A0DBBu, 0x086D3D2Du,
    0x91646C97u, 0xE6635C01u, 0x6B6B51F4u, 0x1C6C6162u, 0x856530D8u, 0xF262004Eu,
    0x6C0695EDu, 0x1B01A57Bu, 0x8208F4C1u, 0xF50FC457u, 0x65B0D9C6u, 0x12B7E950u,
    0x8BBEB8EAu, 0xFCB9887Cu, 0x62DD1DDFu, 0x15DA2D49u, 0x8CD37CF3u, 0xFBD44C65u,
    0x4DB26158u, 0x3AB551CEu, 0xA3BC0074u, 0xD4BB30E2u, 0x4ADFA541u, 0x3DD895D7u,
    0xA4D1C46Du, 0xD3D6F4FBu, 0x4369E96Au, 0x346ED9FCu, 0xAD678846u, 0xDA60B8D0u,
    0x44042D73u, 0x33031DE5u, 0xAA0A4C5Fu, 0xDD0D7CC9u, 0x5005713Cu, 0x270241AAu,
    0xBE0B1010u, 0xC90C2086u, 0x5768B525u, 0x206F85B3u, 0xB966D409u, 0xCE61E49Fu,
    0x5EDEF90Eu, 0x29D9C998u, 0xB0D09822u, 0xC7D7A8B4u, 0x59B33D17u, 0x2EB40D81u,
    0xB7BD5C3Bu, 0xC0BA6CADu, 0xEDB88320u, 0x9ABFB3B6u, 0x03B6E20Cu, 0x74B1D29Au,
    0xEAD54739u, 0x9DD277AFu, 0x04DB2615u, 0x73DC1683u, 0xE3630B12u, 0x94643B84u,
    0x0D6D6A3Eu, 0x7A6A5AA8u, 0xE40ECF0Bu, 0x9309FF9Du, 0x0A00AE27u, 0x7D079EB1u,
    0xF00F9344u, 0x8708A3D2u, 0x1E01F268u, 0x6906C2FEu, 0xF762575Du, 0x806567CBu,
    0x196C3671u, 0x6E6B06E7u, 0xFED41B76u, 0x89D32BE0u, 0x10DA7A5Au, 0x67DD4ACCu,
    0xF9B9DF6Fu, 0x8EBEEFF9u, 0x17B7BE43u, 0x60B08ED5u, 0xD6D6A3E8u, 0xA1D1937Eu,
    0x38D8C2C4u, 0x4FDFF252u, 0xD1BB67F1u, 0xA6BC5767u, 0x3FB506DDu, 0x48B2364Bu,
    0xD80D2BDAu, 0xAF0A1B4Cu, 0x36034AF6u, 0x41047A60u, 0xDF60EFC3u, 0xA867DF55u,
    0x316E8EEFu, 0x4669BE79u, 0xCB61B38Cu, 0xBC66831Au, 0x256FD2A0u, 0x5268E236u,
    0xCC0C7795u, 0xBB0B4703u, 0x220216B9u, 0x5505262Fu, 0xC5BA3BBEu, 0xB2BD0B28u,
    0x2BB45A92u, 0x5CB36A04u, 0xC2D7FFA7u, 0xB5D0CF31u, 0x2CD99E8Bu, 0x5BDEAE1Du,
    0x9B64C2B0u, 0xEC63F226u, 0x756AA39Cu, 0x026D930Au, 0x9C0906A9u, 0xEB0E363Fu,
    0x72076785u, 0x05005713u, 0x95BF4A82u, 0xE2B87A14u, 0x7BB12BAEu, 0x0CB61B38u,
    0x92D28E9Bu, 0xE5D5BE0Du, 0x7CDCEFB7u, 0x0BDBDF21u, 0x86D3D2D4u, 0xF1D4E242u,
    0x68DDB3F8u, 0x1FDA836Eu, 0x81BE16CDu, 0xF6B9265Bu, 0x6FB077E1u, 0x18B74777u,
    0x88085AE6u, 0xFF0F6A70u, 0x66063BCAu, 0x11010B5Cu, 0x8F659EFFu, 0xF862AE69u,
    0x616BFFD3u, 0x166CCF45u, 0xA00AE278u, 0xD70DD2EEu, 0x4E048354u, 0x3903B3C2u,
    0xA7672661u, 0xD06016F7u, 0x4969474Du, 0x3E6E77DBu, 0xAED16A4Au, 0xD9D65ADCu,
    0x40DF0B66u, 0x37D83BF0u, 0xA9BCAE53u, 0xDEBB9EC5u, 0x47B2CF7Fu, 0x30B5FFE9u,
    0xBDBDF21Cu, 0xCABAC28Au, 0x53B39330u, 0x24B4A3A6u, 0xBAD03605u, 0xCDD70693u,
    0x54DE5729u, 0x23D967BFu, 0xB3667A2Eu, 0xC4614AB8u, 0x5D681B02u, 0x2A6F2B94u,
    0xB40BBE37u, 0xC30C8EA1u, 0x5A05DF1Bu, 0x2D02EF8Du,
};

#ifdef SPLITRL_CRC_SLICE_BY_8
/* Eight bytes per step through eight tables (8 KiB, built on first use): several times faster
 * than a byte per step on hosts, where the payloads of 8-bit frames are large. */
static uint32_t slice_tables[8][256];
static int slice_tables_built = 0;

static void build_slice_tables(void) {
    for (int byte = 0; byte < 256; byte++) {
        uint32_t crc = CRC_TABLE[byte];
        slice_tables[0][byte] = crc;
        for (int slice = 1; slice < 8; slice++) {
            crc = CRC_TABLE[crc & 0xFFu] ^ (crc >> 8);
            slice_tables[slice][byte] = crc;
        }
    }
    slice_tables_built = 1;
}
#endif

uint32_t splitrl_crc32(uint32_t crc, const uint8_t *data, size_t size) {
    size_t index = 0;
    crc = ~crc;
#ifdef SPLITRL_CRC_SLICE_BY_8
    if (!slice_tables_built) {
        build_slice_tables();
    }
    for (; index + 8 <= size; index += 8) {
        const uint32_t low = crc ^ load_u32(data + index), high = load_u32(data + index + 4);
        crc = slice_tables[7][low & 0xFFu] ^ slice_tables[6][(low >> 8) & 0xFFu] ^
              slice_tables[5][(low >> 16) & 0xFFu] ^ slice_tables[4][low >> 24] ^
              slice_tables[3][high & 0xFFu] ^ slice_tables[2][(high >> 8) & 0xFFu] ^
              slice_tables[1][(high >> 16) & 0xFFu] ^ slice_tables[0][high >> 24];
    }
#endif
    for (; index < size; index++) {
        crc = CRC_TABLE[(crc ^ data[index]) & 0xFFu] ^ (crc >> 8);
    }
    return ~crc;
}

int splitrl_encode_float32_frame(const float *values, const uint32_t *shape, int ndim, int bits,
                                 uint32_t *workspace, size_t workspace_size, uint8_t *frame,
                                 size_t capacity, size_t *frame_size) {
    if (bits < 1 || bits > 8 || ndim < 0 || ndim > SPLITRL_MAX_NDIM) {
        return SPLITRL_BAD_ARGUMENT;
    }
    uint64_t count = 1;
    for (int axis = 0; axis < ndim; axis++) {
        count *= shape[axis];
        if (count == 0 || count > SPLITRL_MAX_COUNT) {
            return SPLITRL_BAD_ARGUMENT;
        }
    }
    if (workspace_size / 4 < SPLITRL_ENCODE_WORKSPACE_WORDS(count)) {
        return SPLITRL_BUFFER_TOO_SMALL;
    }
    float offset, scale;
    if (!splitrl_float32_parameters(values, (size_t)count, bits, &offset, &scale) ||
        !parameters_are_finite(offset, scale, bits)) {
        return SPLITRL_UNSUPPORTED;
    }
    const int levels = (1 << bits) - 1;
    /* the codes go after the workspace of splitrl_scan_runs() */
    uint8_t *codes = (uint8_t *)(workspace + 3 * (count / MIN_RUN)) + 2 * count + 8;
    splitrl_quantize(codes, values, 1, (size_t)count, offset, scale, levels);
    /* quantize.zero_code(), the code of 0.0, is the code splitrl_quantize() gives it */
    uint8_t zero_code;
    const float zero = 0.0f;
    splitrl_quantize(&zero_code, &zero, 1, 1, offset, scale, levels);
    SplitrlRuns runs;
    splitrl_scan_runs(codes, (size_t)count, bits, zero_code, workspace, &runs);
    const uint64_t packed = splitrl_packed_size(count, bits);
    const int run_length = runs.size < packed;
    const uint64_t payload_size = run_length ? runs.size : packed;
    const size_t header = SPLITRL_FRAME_HEADER((size_t)ndim);
    if (capacity < header || capacity - header < payload_size) {
        return SPLITRL_BUFFER_TOO_SMALL;
    }
    const uint8_t fixed[FIXED_HEADER] = {
        'S', 'P', 'L', 'C', FRAME_VERSION, run_length ? CODING_RUN_LENGTH : CODING_BIT_PACKED,
        0,   DTYPE_FLOAT32, (uint8_t)bits, DTYPE_FLOAT32, (uint8_t)ndim};
    memcpy(frame, fixed, FIXED_HEADER);
    for (int axis = 0; axis < ndim; axis++) {
        store_u32(frame + FIXED_HEADER + 4 * axis, shape[axis]);
    }
    store_u32(frame + header - 16, float_bits(offset));
    store_u32(frame + header - 12, float_bits(scale));
    store_u32(frame + header - 8, (uint32_t)payload_size);
    uint8_t *payload = frame + header;
    if (run_length) {
        splitrl_write_runs(payload, &runs);
    } else {
        pack_u8(payload, codes, (size_t)count, bits, (uint32_t)levels);
    }
    const uint32_t crc = splitrl_crc32(splitrl_crc32(0, frame, header - 4), payload,
                                       (size_t)payload_size);
    store_u32(frame + header - 4, crc);
    *frame_size = header + (size_t)payload_size;
    return SPLITRL_OK;
}
