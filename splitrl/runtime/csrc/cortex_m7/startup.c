/*
 * Minimal Cortex-M7 start-up for QEMU's mps2-an500: the vector table, copying .data to RAM,
 * clearing .bss, enabling the FPU, main(), and ARM semihosting for output and exit.
 */
#include <stdint.h>

#include "semihosting.h"

extern uint32_t data_start, data_end, data_load, bss_start, bss_end, stack_top;
int main(void);
void reset_handler(void);

static void fault_handler(void) {
    semihosting_write("fault\n");
    semihosting_exit(1);
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&stack_top), reset_handler, fault_handler, fault_handler,
    fault_handler, fault_handler, fault_handler, 0, 0, 0, 0, fault_handler, fault_handler, 0,
    fault_handler, fault_handler,
};

void reset_handler(void) {
    const uint32_t *source = &data_load;
    for (uint32_t *word = &data_start; word < &data_end; word++) {
        *word = *source++;
    }
    for (uint32_t *word = &bss_start; word < &bss_end; word++) {
        *word = 0;
    }
    /* CPACR: full access to the coprocessors 10 and 11 (the FPU) */
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;
    __asm__ volatile("dsb\n\tisb");
    semihosting_exit(main());
}

static int semihosting_call(int operation, const void *argument) {
    register int r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void semihosting_write(const char *text) { semihosting_call(0x04, text); /* SYS_WRITE0 */ }

void semihosting_exit(int status) {
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (0) or ADP_Stopped_RunTimeErrorUnknown */
    semihosting_call(0x18, (const void *)(uintptr_t)(status == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}
