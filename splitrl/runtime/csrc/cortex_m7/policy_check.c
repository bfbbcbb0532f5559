/*
 * A test program for a Cortex-M7: decides on the fixed observations of check_vectors.h with the
 * generated policy, encodes its tensor at every bit-width with the codec core, and prints the
 * results through semihosting for a host to compare with its own:
 *
 *   action INDEX EXIT SPLIT BITS
 *   exits EXIT SPLIT GATE_EXIT... (splitrl_policy_gate_exits of every exit and split)
 *   stops INDEX 0|1 (splitrl_policy_gate_stops of check_gate_logits[INDEX])
 *   frame BITS SIZE HEX
 *   ticks decide|encode|calibration SYSTICK_TICKS
 *
 * The SysTick counts of N_REPEATS decisions, of one 8-bit encoding and of a loop of
 * CALIBRATION_INSTRUCTIONS instructions give instruction-count estimates under QEMU -icount;
 * QEMU is not cycle-accurate.
 */
#include <stddef.h>
#include <stdint.h>

#include "check_vectors.h"
#include "semihosting.h"
#include "splitrl_codec.h"
#include "splitrl_policy.h"

#define N_REPEATS 16
#define CALIBRATION_LOOPS 100000 /* two instructions each */

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

static uint32_t workspace[SPLITRL_ENCODE_WORKSPACE_WORDS(CHECK_COUNT)];
static uint8_t frame[SPLITRL_FRAME_CAPACITY(CHECK_COUNT, CHECK_NDIM)];
static char line[2 * SPLITRL_FRAME_CAPACITY(CHECK_COUNT, CHECK_NDIM) + 64];

static char *put_text(char *out, const char *text) {
    while (*text) {
        *out++ = *text++;
    }
    return out;
}

static char *put_number(char *out, uint32_t value) {
    char digits[10];
    int length = 0;
    do {
        digits[length++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    while (length) {
        *out++ = digits[--length];
    }
    return out;
}

static void finish(char *out) {
    *out++ = '\n';
    *out = '\0';
    semihosting_write(line);
}

static uint32_t ticks_since(uint32_t start) { return (start - SYST_CVR) & 0xFFFFFFu; }

static void report_ticks(const char *name, uint32_t ticks) {
    finish(put_number(put_text(put_text(line, "ticks "), name), ticks));
}

int main(void) {
    static const char hex[] = "0123456789abcdef";
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u; /* enabled, processor clock, no interrupt */
    for (int index = 0; index < CHECK_N_OBSERVATIONS; index++) {
        const SplitrlAction action = splitrl_policy_act(check_observations[index]);
        char *out = put_number(put_text(line, "action "), (uint32_t)index);
        out = put_number(put_text(out, " "), (uint32_t)action.exit);
        out = put_number(put_text(out, " "), (uint32_t)action.split);
        finish(put_number(put_text(out, " "), (uint32_t)action.bits));
    }
    for (int exit = 0; exit < SPLITRL_POLICY_N_EXITS; exit++) {
        for (int split = 0; split < SPLITRL_POLICY_N_SPLITS; split++) {
            const SplitrlAction action = {exit, split, 0};
            int exits[SPLITRL_POLICY_N_EXITS];
            const int n_exits = splitrl_policy_gate_exits(action, exits);
            char *out = put_number(put_text(line, "exits "), (uint32_t)exit);
            out = put_number(put_text(out, " "), (uint32_t)split);
            for (int k = 0; k < n_exits; k++) {
                out = put_number(put_text(out, " "), (uint32_t)exits[k]);
            }
            finish(out);
        }
    }
    for (int index = 0; index < CHECK_N_GATE_LOGITS; index++) {
        const int stops = splitrl_policy_gate_stops(check_gate_logits[index], CHECK_N_CLASSES);
        char *out = put_number(put_text(line, "stops "), (uint32_t)index);
        finish(put_number(put_text(out, " "), (uint32_t)stops));
    }
    for (int bits = 1; bits <= 8; bits++) {
        size_t size = 0;
        const int status =
            splitrl_encode_float32_frame(check_tensor, check_shape, CHECK_NDIM, bits, workspace,
                                         sizeof workspace, frame, sizeof frame, &size);
        if (status != SPLITRL_OK) {
            finish(put_number(put_text(line, "error "), (uint32_t)status));
            return 1;
        }
        char *out = put_number(put_text(line, "frame "), (uint32_t)bits);
        out = put_number(put_text(out, " "), (uint32_t)size);
        out = put_text(out, " ");
        for (size_t byte = 0; byte < size; byte++) {
            *out++ = hex[frame[byte] >> 4];
            *out++ = hex[frame[byte] & 15];
        }
        finish(out);
    }
    volatile int sink = 0;
    uint32_t start = SYST_CVR;
    for (int repeat = 0; repeat < N_REPEATS; repeat++) {
        sink += splitrl_policy_act(check_observations[repeat % CHECK_N_OBSERVATIONS]).split;
    }
    report_ticks("decide ", ticks_since(start));
    size_t size;
    start = SYST_CVR;
    sink += splitrl_encode_float32_frame(check_tensor, check_shape, CHECK_NDIM, 8, workspace,
                                         sizeof workspace, frame, sizeof frame, &size);
    report_ticks("encode ", ticks_since(start));
    start = SYST_CVR;
    uint32_t loops = CALIBRATION_LOOPS;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(loops));
    report_ticks("calibration ", ticks_since(start));
    (void)sink;
    return 0;
}
