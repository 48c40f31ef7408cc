/*
 * The L4 layer of the wedge: the backend primitives as L4 X.2 system calls
 * and IPC to the monitor (backends/l4/abi.py: MONITOR), the way a user-level
 * thread of L4Ka::Pistachio makes them.  System calls go through the KIP's
 * stubs (call *KIP+link); IPC carries MR0 in ESI, MR1 and MR2 in EBX and
 * EBP, the rest in the UTCB.  The wedge finds its UTCB at a fixed address
 * (start info) rather than through %gs:0, because %gs is the guest's.
 *
 * The VM's mappings of guest memory are the monitor's, made on page-fault
 * IPC.  When the guest kernel says a translation is stale (invlpg, a CR3
 * write, a paging-mode change) the wedge revokes it with Unmap, batched in
 * an unmap cache as Afterburner's L4 backend does, and tells the monitor to
 * revoke the same range from the guest's user space.
 */
#include "wedge.h"
#include "l4_abi.h"

static u32 kip, monitor, utcb;
static u32 *mr;                                 /* MR0 of the VM thread: its local id */
static volatile u8 *const shared = (volatile u8 *)L4_SHARED;

#define SHARED32(off) (*(volatile u32 *)(shared + (off)))
#define TAG(label, u) (((u32)(label) << 16) | (u))

/* The system-call entry points, found through the KIP at start-up (as
 * Pistachio's libl4 keeps them in globals): an absolute memory operand is
 * the one that stays right while the stubs push %ebp. */
static u32 ipc_entry, unmap_entry;

static u32 stub(u32 link) { return kip + *(volatile u32 *)(kip + link); }

/* Ipc: EAX to, EDX FromSpecifier, ECX timeouts, ESI MR0, EDI the UTCB (local
 * id); back come EAX from, ESI MR0, EBX MR1, EBP MR2 (ECX, EDX clobbered). */
static u32 l4_ipc(u32 to, u32 from, u32 tag)
{
    u32 eax = to, ecx = L4_NEVER, edx = from, esi = tag, edi = (u32)mr, ebx;
    __asm__ volatile("pushl %%ebp\n\t"
                     "call *%[entry]\n\t"
                     "movl %%ebp, %%ecx\n\t"
                     "popl %%ebp"
                     : "+a"(eax), "+c"(ecx), "+d"(edx), "+S"(esi), "+D"(edi), "=b"(ebx)
                     : [entry] "m"(ipc_entry)
                     : "memory", "cc");
    mr[0] = esi;
    mr[1] = ebx;
    mr[2] = ecx;
    vcpu.hypercalls++;
    return esi;
}

/* A call to the monitor: MR1..MRu are already in place. */
static u32 call(u32 label, u32 u)
{
    u32 tag = l4_ipc(monitor, monitor, TAG(label, u));
    if (tag & L4_ERROR_TAG)
        for (;;)
            ;                                   /* no one left to tell */
    return tag;
}

/* Unmap(control): fpages in MR0..MRk, MR0 also in ESI. */
static void l4_unmap(u32 control)
{
    u32 eax = control, esi = mr[0], edi = (u32)mr;
    __asm__ volatile("pushl %%ebp\n\t"
                     "call *%[entry]\n\t"
                     "popl %%ebp"
                     : "+a"(eax), "+S"(esi), "+D"(edi)
                     : [entry] "m"(unmap_entry)
                     : "memory", "cc", "ecx", "edx", "ebx");
    mr[0] = esi;
    vcpu.hypercalls++;
}

/* ------------------------------------------------------------------ */
/* The unmap cache */

#define UNMAP_CACHE 60                           /* Afterburner's size */
static u32 cache[UNMAP_CACHE];
static u32 cached;

static u32 fpage(u32 base, u32 log2) { return (base & ~((1u << log2) - 1)) | (log2 << 4) | 7; }

static void commit(void)
{
    if (!cached)
        return;
    /* Our own mappings (flush), and what derives from them. */
    for (u32 i = 0; i < cached; i++)
        mr[i] = cache[i];
    l4_unmap((cached - 1) | L4_UNMAP_FLUSH);
    /* The guest's user space holds the same translations from the monitor. */
    for (u32 i = 0; i < cached; i++)
        mr[1 + i] = cache[i];
    call(L4_MON_FLUSH_USER, cached);
    cached = 0;
}

static void revoke(u32 fp)
{
    if (cached == UNMAP_CACHE)
        commit();
    cache[cached++] = fp;
}

/* Everything below the hole: ten fpages, largest first (a complete-space
 * flush would take the KIP and UTCB areas too). */
static void revoke_all(void)
{
    u32 base = 0;
    for (u32 log2 = 31; base < L4_HOLE_BASE; log2--) {
        revoke(fpage(base, log2));
        base += 1u << log2;
    }
}

/* ------------------------------------------------------------------ */
/* The backend primitives */

int be_pending(void) { return shared[L4_SHARED_PENDING]; }

int be_inta(void)
{
    call(L4_MON_INTA, 0);
    return (int)mr[1];
}

void be_sti_shadow(u32 next)
{
    mr[1] = next;
    call(L4_MON_STI_SHADOW, 1);
}

u32 be_pio(struct pio *req)
{
    memcpy(&mr[1], req, sizeof *req);
    call(L4_MON_PIO, sizeof *req / 4);
    return mr[1];
}

void be_paging(u32 cr0, u32 cr4)
{
    revoke_all();
    commit();
    mr[1] = cr0;
    mr[2] = cr4;
    call(L4_MON_PAGING, 2);
}

int be_set_cr3(u32 cr3)
{
    revoke_all();
    commit();
    mr[1] = cr3;
    call(L4_MON_CR3, 1);
    return 0;
}

void be_flush_tlb(void)
{
    revoke_all();
    commit();
}

void be_invlpg(u32 va)
{
    revoke(fpage(va, 12));
    commit();
}

int be_set_gdt(u32 base, u32 limit)
{
    mr[1] = base;
    mr[2] = (limit + 1) / 8;
    call(L4_MON_SET_GDT, 2);
    return mr[1] ? -1 : 0;
}

int be_set_ldt(u32 base, u32 limit)
{
    mr[1] = base;
    mr[2] = limit ? (limit + 1) / 8 : 0;
    call(L4_MON_SET_LDT, 2);
    return 0;
}

void be_update_descriptor(u32 linear)
{
    mr[1] = linear;
    call(L4_MON_UPDATE_DESCRIPTOR, 1);
}

void be_block(void) { call(L4_MON_IDLE, 0); }

void be_halt(void)
{
    call(L4_MON_IDLE, 0);                       /* the monitor ends the run: IF is off */
    wedge_panic("woke from a halt with interrupts disabled");
}

int be_rdmsr(u32 index, u32 *lo, u32 *hi)
{
    mr[1] = index;
    call(L4_MON_RDMSR, 1);
    *lo = mr[2];
    *hi = mr[3];
    return -(int)mr[1];
}

int be_wrmsr(u32 index, u32 lo, u32 hi)
{
    mr[1] = index;
    mr[2] = lo;
    mr[3] = hi;
    call(L4_MON_WRMSR, 3);
    return -(int)mr[1];
}

void be_console(const char *s, u32 n)
{
    while (n) {
        u32 chunk = n > 56 ? 56 : n;
        mr[1] = chunk;
        memcpy(&mr[2], s, chunk);
        call(L4_MON_CONSOLE, 1 + (chunk + 3) / 4);
        s += chunk;
        n -= chunk;
    }
}

void be_crash(void)
{
    mr[1] = L4_SHUTDOWN_CRASH;
    call(L4_MON_SHUTDOWN, 1);
    for (;;)
        ;
}

u32 be_cr2(void) { return SHARED32(L4_SHARED_ENTRY_CR2); }

/* In an upcall: the vector the IRQ thread acknowledged. */
int be_take_event(void)
{
    shared[L4_SHARED_PENDING] = 0;
    set_pending_entry(0);
    return (int)SHARED32(L4_SHARED_VECTOR);
}

/* Enter guest user mode: a call to the monitor, which runs the user thread
 * and replies when user mode stops (a trap, a fault, an interrupt), with
 * why and the user context.  Then it is the guest kernel's to handle. */
void be_return_to_user(struct uframe *u)
{
    memcpy(&mr[1], u, sizeof *u);
    call(L4_MON_ACTIVATE, sizeof *u / 4);
    vcpu.depth++;                               /* back in the wedge, as a trap entry counts */
    u32 info = mr[1], word = mr[2], cr2 = mr[3];
    struct uframe got;
    memcpy(&got, &mr[4], sizeof got);
    __asm__ volatile("movw %w0, %%fs; movw %w1, %%gs" :: "r"(got.fs), "r"(got.gs));
    struct ictx ctx = {got.eip, got.cs, got.eflags, got.esp, got.ss};
    if (info == UPCALL_INFO)
        deliver(&got.r, (int)word, 0, 0, &ctx, 0, 0);
    int vec = info & TRAP_VECTOR, soft = (info & TRAP_SOFTWARE) ? (info >> TRAP_SOFT_LEN_SHIFT) & 15 : 0;
    if (vec == 14)
        vcpu.cr2 = cr2;
    deliver(&got.r, vec, !!(info & TRAP_HAS_ERROR), word, &ctx, 0, soft);
}

void be_init(const u32 *si)
{
    u32 found;
    /* KernelInterface: lock; nop (the kernel emulates the #UD). */
    __asm__ volatile("lock; nop" : "=a"(found) :: "ecx", "edx", "esi", "memory");
    kip = found;
    monitor = si[L4_SI_MONITOR];
    utcb = si[L4_SI_UTCB];
    mr = (u32 *)(utcb + L4_UTCB_MR0);
    ipc_entry = stub(L4_LINK_IPC);
    unmap_entry = stub(L4_LINK_UNMAP);
    if (kip != si[L4_SI_KIP] || *(volatile u32 *)kip != 0x4be6344c)
        for (;;)
            ;
}
