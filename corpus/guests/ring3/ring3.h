/* ring3: interface between the kernel part and the user program. */
#ifndef RING3_H
#define RING3_H

#include <stdint.h>

#define SYS_WRITE 1  /* ebx = NUL-terminated string */
#define SYS_EXIT  2  /* ebx = exit code; never returns */
#define SYS_ADD   3  /* returns ebx + ecx */
#define SYS_GETIF 4  /* returns EFLAGS.IF (0/1) seen inside the handler */

#define VEC_SYSCALL   0x80 /* trap gate, DPL3 */
#define VEC_INTGATE   0x82 /* interrupt gate, DPL3 */
#define VEC_KERNELONLY 0x81 /* DPL0: int from ring 3 raises #GP */

/* entry.S */
void enter_user(void (*entry)(void), uint32_t user_esp) __attribute__((noreturn));
void user_start(void);
uint32_t sys_write_asm(const char *s);

/* user.c */
void user_main(void);

#endif
