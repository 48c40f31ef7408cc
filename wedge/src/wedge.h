/*
 * The wedge: Afterburn's in-guest monitor.
 *
 * It runs in the guest's own address space (the hypervisor hole at the top
 * 4 MiB) at the guest kernel's real ring (GUEST_RING: 1 or 3), called from
 * patched sites.  The frontend (cpu.c, irq.c, boot.c, entry.S) is the CPU:
 * it keeps the virtual CPU (struct vcpu, laid out by wedge/layout.py) and
 * gives every sensitive instruction its architectural meaning.  The backend
 * (one directory per hypervisor) supplies the few primitives that differ,
 * the be_* functions below: port I/O, the MMU, blocking, event delivery,
 * entering user mode.  It may also replace the default entry stubs
 * (bounce.S, weak symbols) with its own, for traps that arrive another way.
 * Where the virtual IF lives is the backend's choice too, made at build time
 * (BE_VIF_* in wedge_abi.h).  The frontend never asks which backend it runs
 * on.
 *
 * Site ABI.  A patched site calls an entry point (entry.S); the bytes after
 * the call are its arguments, described here and encoded by
 * rewriter/templates.py (tests/test_templates.py runs every form):
 *
 *   w_pending                 (no args)  sti found an interrupt pending; sti patches call
 *                             it through vcpu.pending_entry, which holds w_ret otherwise
 *   w_pushf, w_popf           (no args)  32-bit forms: assembly fast paths
 *   w_pushf16, w_popf16       (no args)  16-bit forms
 *   w_io                      desc: bits0-1 log2 size, bit2 in, bit3 imm port (port byte follows),
 *                                   bit4 string, bit5 rep
 *   w_movcr                   desc: bits0-2 gpr, bits3-5 crN/drN, bit6 write, bit7 debug register
 *   w_sreg                    desc: bits0-2 sreg, bits3-5 gpr, bits6-7 op (0 load, 1 store r32, 2 store r16)
 *   w_sreg_m      (MEMCALL)   desc: bits0-2 sreg, bit3 store
 *   w_pushseg, w_popseg       desc: bits0-2 sreg, bit3 16-bit
 *   w_dtr         (MEMCALL)   desc: bits0-1 (lgdt, lidt, sgdt, sidt), bit2 16-bit
 *   w_sys                     desc: bits0-2 op (sldt str lldt ltr verr verw smsw lmsw), bits3-5 gpr, bit6 16-bit
 *   w_sys_m       (MEMCALL)   desc: bits0-2 op
 *   w_lar                     desc: bit0 lsl, bits1-3 dst gpr, bits4-6 src gpr, bit7 16-bit
 *   w_lar_m       (MEMCALL)   desc: bit0 lsl, bits1-3 dst gpr, bit7 16-bit
 *   w_arpl                    desc: bits0-2 dst gpr, bits3-5 src gpr
 *   w_arpl_m      (MEMCALL)   desc: bits3-5 src gpr
 *   w_misc                    desc: clts invd wbinvd cpuid rdmsr wrmsr rdtsc rsm hlt (0..8),
 *                             rewriter/templates.py MISC_OP (9..31)
 *   w_invlpg      (MEMCALL)   desc: 0
 *   w_iret                    desc: bit0 16-bit
 *   w_lret                    desc: bit0 16-bit, bit1 imm16 follows
 *   w_far                     desc: bit0 call, bit1 16-bit; offset (4 or 2 bytes), selector (2 bytes)
 *   w_far_m       (MEMCALL)   desc: bit0 call, bit1 16-bit
 *   w_lxs         (MEMCALL)   desc: bits0-2 sreg, bits3-5 gpr, bit6 16-bit
 *   w_int                     vector
 *   w_int3, w_into            (no args)
 *
 * MEMCALL sites saved EAX in vcpu.scratch and put the memory operand's
 * offset in EAX before the call.  An instruction with a segment override
 * calls the entry's *_seg twin instead, and one more byte after the
 * descriptor names the segment (ES CS SS DS FS GS = 0..5).
 */
#ifndef WEDGE_H
#define WEDGE_H

#include <stdint.h>
#include <stddef.h>
#include "wedge_abi.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;

extern struct vcpu vcpu;

enum { ES, CS, SS, DS, FS, GS };

#define EFL_CF 0x1u
#define EFL_ZF 0x40u
#define EFL_TF 0x100u
#define EFL_IF 0x200u
#define EFL_DF 0x400u
#define EFL_OF 0x800u
#define EFL_IOPL 0x3000u
#define EFL_NT 0x4000u
#define EFL_RF 0x10000u
#define EFL_VM 0x20000u
#define EFL_SYS (EFL_IOPL | EFL_NT)            /* kept virtual: the real ones stay 0 in the guest kernel */

/* struct regs (what an entry stub saves and every exit restores), struct
 * frame (what a site entry stub leaves below the site's return address),
 * struct uframe and struct pio are generated in wedge_abi.h. */

/* The virtual IF: a byte in the backend's memory, where the inline cli/sti
 * patches write it too. */
static inline int vif(void) { return *(volatile u8 *)BE_VIF_ADDR == BE_VIF_ON; }
static inline void set_vif(int on) { *(volatile u8 *)BE_VIF_ADDR = on ? BE_VIF_ON : BE_VIF_OFF; }

/* The guest stack pointer at the site (before the call). */
static inline u32 guest_esp(const struct frame *f) { return f->r.esp_ + 8; }

/* A GPR by ModRM number; ESP reads give the site's stack pointer. */
u32 get_reg(const struct frame *f, int r);
void set_reg(struct frame *f, int r, u32 v);

static inline u8 arg8(struct frame *f) { u8 v = *(u8 *)f->ret; f->ret += 1; return v; }
static inline u16 arg16(struct frame *f) { u16 v = *(u16 *)f->ret; f->ret += 2; return v; }
static inline u32 arg32(struct frame *f) { u32 v = *(u32 *)f->ret; f->ret += 4; return v; }

/* The guest context an interrupt or exception interrupts, as the guest
 * would see it pushed (virtual selectors and flags). */
struct ictx {
    u32 eip, cs, eflags, esp, ss;
};

/* entry.S */
void wedge_exit(void) __attribute__((noreturn));
void w_trap(void);
void w_upcall(void);
void w_pending(void);
void w_ret(void);
void set_pending_entry(int pending);           /* keep vcpu.pending_entry in step with the backend */

/* cpu.c */
u32 virtual_eflags(u32 real);
void set_virtual_eflags(u32 value, u32 *real, int can_iopl);
u32 seg_base(int sreg);
u32 memcall_addr(struct frame *f);
int load_segment(int sreg, u32 sel, int for_cs, u32 *err_vec, u32 *err_code);
u32 real_selector(int sreg);
int read_descriptor(u32 sel, u32 desc[2]);
void mark_accessed(u32 sel, u32 desc[2]);
void refresh_descriptors(void);
struct site { u32 start, end, insn; };
int site_of(u32 addr, struct site *out);

/* irq.c: leaving the wedge somewhere other than the site's end */
void leave(struct regs *r, u32 eip, u32 cs, u32 eflags, u32 esp) __attribute__((noreturn));
void leave_to_user(struct regs *r, u32 eip, u32 cs, u32 eflags, u32 esp, u32 ss) __attribute__((noreturn));
void deliver(struct regs *r, int vector, int has_err, u32 err, struct ictx *ctx, u32 stack, int soft)
    __attribute__((noreturn));
void raise_fault(struct frame *f, int vector, int has_err, u32 err) __attribute__((noreturn));
void maybe_deliver_pending(struct frame *f, u32 eip, u32 eflags_virtual, u32 esp);
void wedge_trap(struct regs *r, u32 info, u32 *frame) __attribute__((noreturn));

/* boot.c */
void wedge_boot(const u32 *start_info) __attribute__((noreturn));
void wedge_panic(const char *msg) __attribute__((noreturn));
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);

/*
 * The backend interface: each backend directory implements these.
 */
int be_pending(void);                      /* an interrupt may be waiting */
int be_inta(void);                         /* acknowledge one: its vector, or -1 */
void be_sti_shadow(u32 next);              /* deliver what is pending after the instruction at next */
u32 be_pio(struct pio *req);               /* port I/O; string forms return elements done */
/* Enter guest user mode with exactly this context (the virtual IF and IOPL
 * in u->eflags become the real ones there): the hypervisor switches the
 * hole out of the address space where page privilege cannot (GUEST_RING 3). */
void be_return_to_user(struct uframe *u) __attribute__((noreturn));
void be_paging(u32 cr0, u32 cr4);          /* paging mode from virtual CR0/CR4 */
int be_set_cr3(u32 cr3);
void be_flush_tlb(void);
void be_invlpg(u32 va);
int be_set_gdt(u32 base, u32 limit);
int be_set_ldt(u32 base, u32 limit);
void be_update_descriptor(u32 linear);     /* re-shadow the descriptor at this guest address */
void be_block(void);                       /* hlt with IF=1: return once something is pending */
void be_halt(void) __attribute__((noreturn));   /* hlt with IF=0 */
int be_rdmsr(u32 index, u32 *lo, u32 *hi);
int be_wrmsr(u32 index, u32 lo, u32 hi);
void be_console(const char *s, u32 n);
void be_crash(void) __attribute__((noreturn));
void be_init(const u32 *start_info);       /* first thing at boot; the backend's words follow SI_WORDS */
u32 be_cr2(void);                          /* the faulting address of the #PF being delivered */
int be_take_event(void);                   /* in an upcall: the vector to deliver, or -1 */

#endif
