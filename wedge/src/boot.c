/*
 * Boot: the hypervisor starts the vCPU in the wedge at the guest kernel's
 * ring, with the start info (wedge/layout.py: START_INFO_WORDS); the wedge
 * sets up the virtual CPU exactly as a multiboot loader leaves a real one
 * (protected mode, paging off, IF clear, flat boot selectors, EAX/EBX) and
 * jumps to the guest's entry point.
 */
#include "wedge.h"

/* String instructions: the entry stubs clear DF, and every exit copies the
 * saved registers with this, so a byte loop would cost ~120 instructions. */
void *memcpy(void *d, const void *s, size_t n)
{
    void *dd = d;
    u32 dwords = n >> 2, bytes = n & 3;
    __asm__ volatile("rep movsl\n\tmovl %3, %%ecx\n\trep movsb"
                     : "+D"(dd), "+S"(s), "+c"(dwords)
                     : "r"(bytes)
                     : "memory");
    return d;
}

void *memset(void *d, int c, size_t n)
{
    void *dd = d;
    __asm__ volatile("rep stosb" : "+D"(dd), "+c"(n) : "a"(c) : "memory");
    return d;
}

static u32 strlen_(const char *s)
{
    u32 n = 0;
    while (s[n])
        n++;
    return n;
}

void wedge_panic(const char *msg)
{
    be_console("afterburn wedge: ", 17);
    be_console(msg, strlen_(msg));
    be_console("\n", 1);
    be_crash();
}

void wedge_boot(const u32 *si)
{
    u32 vec, err;
    if (si[SI_MAGIC] != STARTINFO_MAGIC)
        for (;;)
            ;                                   /* nothing to report to yet */
    be_init(si);
    memset(&vcpu, 0, sizeof vcpu);
    vcpu.depth = 1;                             /* inside the wedge: leave() takes it to 0 */
    set_pending_entry(be_pending());
    vcpu.cr0 = 0x11;                            /* PE, ET: as a multiboot loader leaves it */
    vcpu.dr[6] = 0xffff0ff0u;
    vcpu.dr[7] = 0x400;
    vcpu.sites = si[SI_SITES];
    vcpu.nsites = si[SI_NSITES];
    vcpu.gdt_base = si[SI_GDT_BASE];
    vcpu.gdt_limit = si[SI_GDT_LIMIT];
    set_vif(0);
    if (be_set_gdt(vcpu.gdt_base, vcpu.gdt_limit) < 0)
        wedge_panic("the hypervisor refused the boot GDT");
    u32 ds = si[SI_DS], cs = si[SI_CS];
    for (int s = ES; s <= GS; s++)
        if (s != CS && !load_segment(s, ds, 0, &vec, &err))
            wedge_panic("bad boot data segment");
    u32 d[2];
    if (!read_descriptor(cs, d))
        wedge_panic("bad boot code segment");
    vcpu.seg[CS] = cs;
    vcpu.seg_desc[2 * CS] = d[0];
    vcpu.seg_desc[2 * CS + 1] = d[1];
    vcpu.magic = VCPU_MAGIC;

    struct regs r;
    memset(&r, 0, sizeof r);
    r.eax = si[SI_EAX];
    r.ebx = si[SI_EBX];
    r.ds = real_selector(DS);
    r.es = real_selector(ES);
    u32 fs = real_selector(FS), gs = real_selector(GS);
    __asm__ volatile("movw %w0, %%fs; movw %w1, %%gs" :: "r"(fs), "r"(gs));
    leave(&r, si[SI_ENTRY], real_selector(CS), 0x202, si[SI_ESP]);
}
