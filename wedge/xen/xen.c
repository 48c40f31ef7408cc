/*
 * The Xen layer of the wedge: the backend primitives as Xen-style
 * hypercalls (int $0x82, number in EAX, arguments in EBX, ECX, EDX, ESI,
 * EDI).  The virtual IF is the shared-info page's event upcall mask, which
 * the inline cli/sti patches write directly (backends/xen says so at build
 * time: BE_VIF_*); the 8259's interrupts arrive as an event channel.  See
 * backends/xen/abi.py for the ABI.
 */
#include "wedge.h"
#include "xen_abi.h"

static volatile u8 *const shinfo = (volatile u8 *)XEN_SHARED_INFO;

static long hypercall(u32 nr, u32 a1, u32 a2, u32 a3, u32 a4)
{
    long r;
    __asm__ volatile("int $0x82"
                     : "=a"(r)
                     : "a"(nr), "b"(a1), "c"(a2), "d"(a3), "S"(a4)
                     : "memory");
    vcpu.hypercalls++;
    return r;
}

struct mmuext { u32 cmd, arg1, arg2; };

static long mmuext(u32 cmd, u32 arg1, u32 arg2)
{
    struct mmuext op = {cmd, arg1, arg2};
    u32 done = 0;
    return hypercall(HC_MMUEXT_OP, (u32)&op, 1, (u32)&done, 0x7ff0 /* DOMID_SELF */);
}

int be_pending(void) { return shinfo[SHINFO_UPCALL_PENDING]; }
u32 be_cr2(void) { return *(volatile u32 *)(shinfo + SHINFO_CR2); }

int be_inta(void)
{
    return (int)hypercall(HC_PHYSDEV_OP, PHYSDEVOP_AFTERBURN_INTA, 0, 0, 0);
}

void be_sti_shadow(u32 next)
{
    hypercall(HC_PHYSDEV_OP, PHYSDEVOP_AFTERBURN_STI, next, 0, 0);
}

u32 be_pio(struct pio *req)
{
    long r = hypercall(HC_PHYSDEV_OP, PHYSDEVOP_AFTERBURN_PIO, (u32)req, 0, 0);
    if (r < 0)
        wedge_panic("port I/O refused by the hypervisor");
    return (req->flags & PIO_STRING) ? (u32)r : req->value;
}

void be_paging(u32 cr0, u32 cr4) { mmuext(MMUEXT_AFTERBURN_PAGING, cr0, cr4); }
int be_set_cr3(u32 cr3) { return (int)mmuext(MMUEXT_NEW_BASEPTR, cr3 >> 12, 0); }
void be_flush_tlb(void) { mmuext(MMUEXT_TLB_FLUSH_LOCAL, 0, 0); }
void be_invlpg(u32 va) { mmuext(MMUEXT_INVLPG_LOCAL, va, 0); }

/* Afterburn's set_gdt takes the table's linear address (Xen's takes frames). */
int be_set_gdt(u32 base, u32 limit) { return (int)hypercall(HC_SET_GDT, base, (limit + 1) / 8, 0, 0); }
int be_set_ldt(u32 base, u32 limit) { return (int)mmuext(MMUEXT_SET_LDT, base, limit ? (limit + 1) / 8 : 0); }

/* Afterburn's update_descriptor names the entry by its linear address and
 * re-shadows what the guest wrote there (Xen's takes a machine address and
 * the new value). */
void be_update_descriptor(u32 linear) { hypercall(HC_UPDATE_DESCRIPTOR, linear, 0, 0, 0); }

void be_block(void) { hypercall(HC_SCHED_OP, SCHEDOP_BLOCK, 0, 0, 0); }

void be_halt(void)
{
    /* Blocking with events masked never wakes: the hypervisor ends the run. */
    hypercall(HC_SCHED_OP, SCHEDOP_BLOCK, 0, 0, 0);
    wedge_panic("woke from a halt with interrupts disabled");
}

struct msr { u32 index, lo, hi; };

int be_rdmsr(u32 index, u32 *lo, u32 *hi)
{
    struct msr m = {index, 0, 0};
    long r = hypercall(HC_PHYSDEV_OP, PHYSDEVOP_AFTERBURN_RDMSR, (u32)&m, 0, 0);
    *lo = m.lo;
    *hi = m.hi;
    return (int)r;
}

int be_wrmsr(u32 index, u32 lo, u32 hi)
{
    struct msr m = {index, lo, hi};
    return (int)hypercall(HC_PHYSDEV_OP, PHYSDEVOP_AFTERBURN_WRMSR, (u32)&m, 0, 0);
}

void be_console(const char *s, u32 n) { hypercall(HC_CONSOLE_IO, CONSOLEIO_WRITE, n, (u32)s, 0); }

void be_crash(void)
{
    u32 reason = SHUTDOWN_CRASH;
    hypercall(HC_SCHED_OP, SCHEDOP_SHUTDOWN, (u32)&reason, 0, 0);
    for (;;)
        ;
}

/* Xen's iret hypercall (64-bit PV guests, whose kernels run at ring 3,
 * return to user mode this way): the hypervisor loads the whole context. */
void be_return_to_user(struct uframe *u)
{
    hypercall(HC_IRET, (u32)u, 0, 0, 0);
    wedge_panic("the hypervisor refused the return to user mode");
}

/* In an upcall: the next pending event with its vector, or -1. */
int be_take_event(void)
{
    volatile u32 *pending = (volatile u32 *)(shinfo + SHINFO_EVTCHN_PENDING);
    volatile u32 *mask = (volatile u32 *)(shinfo + SHINFO_EVTCHN_MASK);
    volatile u32 *vector = (volatile u32 *)(shinfo + SHINFO_AFTERBURN_VECTOR);
    shinfo[SHINFO_UPCALL_PENDING] = 0;
    set_pending_entry(0);
    for (int port = 1; port < 32; port++) {
        u32 bit = 1u << port;
        if (!(pending[0] & bit) || (mask[0] & bit))
            continue;
        __atomic_and_fetch(&pending[0], ~bit, __ATOMIC_SEQ_CST);
        if (port == PIC_PORT)
            return (int)vector[port];
        /* Other events (a set_timer_op timer) have no guest vector: the
         * hypervisor only uses them to wake a blocked vCPU. */
    }
    return -1;
}

struct trap_info { u8 vector, flags; u16 cs; u32 address; };
static struct trap_info traps[257];

void be_init(const u32 *start_info)
{
    (void)start_info;
    /* Every vector enters the wedge, which delivers through the guest IDT. */
    for (int v = 0; v < 256; v++)
        traps[v] = (struct trap_info){(u8)v, 3, HYP_CS, (u32)w_trap};
    traps[256] = (struct trap_info){0, 0, 0, 0};
    if (hypercall(HC_SET_TRAP_TABLE, (u32)traps, 0, 0, 0) < 0)
        for (;;)
            ;
    hypercall(HC_SET_CALLBACKS, HYP_CS, (u32)w_upcall, HYP_CS, (u32)w_upcall);
}
