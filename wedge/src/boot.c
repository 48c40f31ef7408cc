/*
 * Boot: the hypervisor starts the vCPU in the wedge at ring 1; the wedge
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

enum { SI_ENTRY, SI_EAX, SI_EBX, SI_GDT_BASE, SI_GDT_LIMIT, SI_CS, SI_DS, SI_ESP, SI_SITES, SI_NSITES };

void wedge_boot(u32 start_info)
{
    u32 vec, err;
    be_init(start_info);
    memset(&vcpu, 0, sizeof vcpu);
    vcpu.depth = 1;                             /* inside the wedge: leave() takes it to 0 */
    set_pending_entry(be_pending());
    vcpu.cr0 = 0x11;                            /* PE, ET: as a multiboot loader leaves it */
    vcpu.dr[6] = 0xffff0ff0u;
    vcpu.dr[7] = 0x400;
    vcpu.sites = be_start_info(SI_SITES);
    vcpu.nsites = be_start_info(SI_NSITES);
    vcpu.gdt_base = be_start_info(SI_GDT_BASE);
    vcpu.gdt_limit = be_start_info(SI_GDT_LIMIT);
    be_set_vif(0);
    if (be_set_gdt(vcpu.gdt_base, vcpu.gdt_limit) < 0)
        wedge_panic("the hypervisor refused the boot GDT");
    u32 ds = be_start_info(SI_DS), cs = be_start_info(SI_CS);
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
    r.eax = be_start_info(SI_EAX);
    r.ebx = be_start_info(SI_EBX);
    r.ds = real_selector(DS);
    r.es = real_selector(ES);
    u32 fs = real_selector(FS), gs = real_selector(GS);
    __asm__ volatile("movw %w0, %%fs; movw %w1, %%gs" :: "r"(fs), "r"(gs));
    leave(&r, be_start_info(SI_ENTRY), real_selector(CS), 0x202, be_start_info(SI_ESP));
}
