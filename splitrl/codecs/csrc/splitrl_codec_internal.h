/*
 * Helpers shared by the encoder (splitrl_codec.c) and the decoder (splitrl_codec_decode.c).
 */
#ifndef SPLITRL_CODEC_INTERNAL_H
#define SPLITRL_CODEC_INTERNAL_H

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "splitrl_codec.h"

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "the codec core needs float arithmetic evaluated in single precision"
#endif

#if defined(__SSE2__) && !defined(SPLITRL_CODEC_SCALAR)
#define SPLITRL_SSE2 1
#include <emmintrin.h>
#endif

#define MIN_RUN SPLITRL_MIN_RUN
#define MAX_WIDTH 32

#define FRAME_VERSION 1
#define CODING_BIT_PACKED 1
#define CODING_RUN_LENGTH 2
#define DTYPE_FLOAT32 10
#define FIXED_HEADER 11

static inline int bit_length(uint64_t value) {
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

static inline uint32_t width_mask(int width) {
    return width >= 32 ? UINT32_MAX : (uint32_t)((1u << width) - 1u);
}

static inline uint32_t float_bits(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static inline void store_u32(uint8_t *out, uint32_t value) {
    out[0] = (uint8_t)value;
    out[1] = (uint8_t)(value >> 8);
    out[2] = (uint8_t)(value >> 16);
    out[3] = (uint8_t)(value >> 24);
}

static inline uint32_t load_u32(const uint8_t *in) {
    return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
}

/* Whether non-finite checks of an IEEE single pattern: all exponent bits set. */
static inline int is_finite_float(float value) {
    return (float_bits(value) & 0x7F800000u) != 0x7F800000u;
}

/* The parameters decode to finite float32 values (frame.check_parameters). */
static inline int parameters_are_finite(float offset, float scale, int bits) {
    const float span = scale * (float)((1 << bits) - 1);
    const float top = offset + span;
    return scale > 0.0f && is_finite_float(offset) && is_finite_float(span) &&
           is_finite_float(top);
}

#endif /* SPLITRL_CODEC_INTERNAL_H */
