/* Output and exit through ARM semihosting (QEMU -semihosting, or a debug probe). */
#ifndef SEMIHOSTING_H
#define SEMIHOSTING_H

void semihosting_write(const char *text);
void semihosting_exit(int status);

#endif
