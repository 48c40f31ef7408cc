/*
 * The frontend, part 1: the virtual CPU's state and the sensitive
 * instructions that do not transfer control.
 *
 * The guest kernel really runs at GUEST_RING (1 or 3) with IOPL 0.  So the
 * real CPU keeps only what that ring may have: arithmetic flags, DF, TF, AC,
 * ID, the general registers, and segment registers loaded with
 * ring-compressed copies of the guest's descriptors (the hypervisor makes
 * them).  Everything privileged is virtual and lives in struct vcpu (IF
 * lives where the backend keeps it):
 *
 *   real EFLAGS  <- guest's arithmetic/DF/TF/AC/ID     virtual: IF, IOPL, NT
 *   real CS/SS/DS... <- same index, DPL < GUEST_RING made GUEST_RING
 *                                                      virtual: the selectors
 *   CR0-CR4, DR0-DR7, GDTR, IDTR, LDTR, TR: virtual only; the backend is
 *   told what it needs (paging mode, page-table base, descriptor tables).
 */
#include "wedge.h"

struct vcpu vcpu __attribute__((aligned(64)));

/* ------------------------------------------------------------------ */
/* Registers and flags */

static u32 *reg_slot(struct regs *r, int n)
{
    /* pushal order, from the lowest address: edi esi ebp esp ebx edx ecx eax */
    u32 *base = &r->edi;
    return &base[7 - n];
}

u32 get_reg(const struct frame *f, int n)
{
    if (n == 4)
        return guest_esp(f);
    return *reg_slot((struct regs *)&f->r, n);
}

void set_reg(struct frame *f, int n, u32 v)
{
    if (n == 4)
        wedge_panic("site writes ESP through the wedge");
    *reg_slot(&f->r, n) = v;
}

static void set_reg16(struct frame *f, int n, u16 v)
{
    set_reg(f, n, (get_reg(f, n) & 0xffff0000u) | v);
}

/* The EFLAGS the guest would see: real flags, virtual IF/IOPL/NT. */
u32 virtual_eflags(u32 real)
{
    u32 v = (real & ~(EFL_IF | EFL_SYS | EFL_RF | EFL_VM)) | vcpu.eflags_sys;
    if (vif())
        v |= EFL_IF;
    return v | 0x2;
}

/* Give the guest the flags in `value`: the parts its real ring may hold go into
 * *real; IF, IOPL and NT become virtual.  At virtual CPL 0, popf and iret
 * may change IOPL (can_iopl). */
void set_virtual_eflags(u32 value, u32 *real, int can_iopl)
{
    *real = (value & ~(EFL_IF | EFL_SYS | EFL_RF | EFL_VM)) | EFL_IF | 0x2;   /* real IF stays on */
    u32 keep = can_iopl ? 0 : (vcpu.eflags_sys & EFL_IOPL);
    vcpu.eflags_sys = (value & (can_iopl ? EFL_SYS : EFL_NT)) | keep;
    set_vif(!!(value & EFL_IF));
}

/* ------------------------------------------------------------------ */
/* Descriptors and segments */

int read_descriptor(u32 sel, u32 desc[2])
{
    u32 base, limit;
    if (sel & 4) {
        u32 ld[2];
        if ((vcpu.ldtr & ~3u) == 0 || !read_descriptor(vcpu.ldtr & ~7u, ld))
            return 0;
        base = (ld[0] >> 16) | ((ld[1] & 0xff) << 16) | (ld[1] & 0xff000000u);
        limit = (ld[0] & 0xffff) | (ld[1] & 0xf0000);
        if (ld[1] & 0x800000)
            limit = (limit << 12) | 0xfff;
    } else {
        base = vcpu.gdt_base;
        limit = vcpu.gdt_limit;
    }
    u32 index = sel & ~7u;
    if (index + 7 > limit)
        return 0;
    desc[0] = *(u32 *)(base + index);
    desc[1] = *(u32 *)(base + index + 4);
    return 1;
}

static u32 desc_base(const u32 d[2])
{
    return (d[0] >> 16) | ((d[1] & 0xff) << 16) | (d[1] & 0xff000000u);
}

static u32 desc_limit(const u32 d[2])
{
    u32 limit = (d[0] & 0xffff) | (d[1] & 0xf0000);
    return (d[1] & 0x800000) ? (limit << 12) | 0xfff : limit;
}

#define DESC_P(d) (((d)[1] >> 15) & 1)
#define DESC_DPL(d) (((d)[1] >> 13) & 3)
#define DESC_S(d) (((d)[1] >> 12) & 1)
#define DESC_TYPE(d) (((d)[1] >> 8) & 0xf)
#define DESC_CODE(d) (DESC_S(d) && (DESC_TYPE(d) & 8))

u32 seg_base(int sreg)
{
    return desc_base(&vcpu.seg_desc[2 * sreg]);
}

/* The linear address of a MEMCALL site's memory operand, after its
 * descriptor byte has been read: EAX holds the operand's offset, and the
 * segment is DS unless the patch came in through a *_seg entry (the
 * instruction had a segment override), whose extra byte names it. */
u32 memcall_addr(struct frame *f)
{
    int sreg = DS;
    if (vcpu.memcall_seg) {
        vcpu.memcall_seg = 0;
        sreg = arg8(f);
        if (sreg > GS)
            wedge_panic("MEMCALL segment byte out of range");
    }
    return f->r.eax + seg_base(sreg);
}

/* Before the CPU loads `sel`, make sure the real table holds the guest's
 * current descriptor (the guest may have rewritten its GDT since): compare
 * it with the copy the hypervisor shadowed last (SEEN_GDT/SEEN_LDT, index for
 * index), and ask for a fresh shadow only if it differs. */
static void ensure_shadow(u32 sel)
{
    u32 d[2];
    if ((sel & ~3u) == 0 || !read_descriptor(sel, d))
        return;
    volatile u32 *seen = (volatile u32 *)(((sel & 4) ? SEEN_LDT : SEEN_GDT) + (sel & ~7u));
    if (seen[0] != d[0] || seen[1] != d[1]) {
        u32 table = vcpu.gdt_base;
        if (sel & 4) {
            u32 ld[2];
            read_descriptor(vcpu.ldtr & ~7u, ld);
            table = desc_base(ld);
        }
        be_update_descriptor(table + (sel & ~7u));
    }
}

/* User code loads segment registers natively, from the real tables: before
 * entering user mode, bring every shadowed descriptor up to date with what
 * the guest wrote into its own tables since (ensure_shadow only looks at
 * the descriptors the wedge itself loads). */
void refresh_descriptors(void)
{
    u32 n = (vcpu.gdt_limit + 1) / 8;
    if (n > GUEST_GDT_MAX)
        n = GUEST_GDT_MAX;
    for (u32 i = 1; i < n; i++) {
        volatile u32 *g = (volatile u32 *)(vcpu.gdt_base + 8 * i), *seen = (volatile u32 *)(SEEN_GDT + 8 * i);
        if (g[0] != seen[0] || g[1] != seen[1])
            be_update_descriptor(vcpu.gdt_base + 8 * i);
    }
    u32 ld[2];
    if ((vcpu.ldtr & ~3u) == 0 || !read_descriptor(vcpu.ldtr & ~7u, ld))
        return;
    u32 base = desc_base(ld), entries = (desc_limit(ld) + 1) / 8;
    for (u32 i = 0; i < entries; i++) {
        volatile u32 *l = (volatile u32 *)(base + 8 * i), *seen = (volatile u32 *)(SEEN_LDT + 8 * i);
        if (l[0] != seen[0] || l[1] != seen[1])
            be_update_descriptor(base + 8 * i);
    }
}

/* A data segment load (mov, pop, lds...) sets the descriptor's accessed
 * bit in the guest's own table, GDT or LDT.  CS and SS loaded by far
 * transfers, iret and interrupt delivery leave it alone: so QEMU does, the
 * oracle (the SDM says the processor sets it on every load). */
void mark_accessed(u32 sel, u32 d[2])
{
    u32 base;
    if ((sel & ~3u) == 0 || (d[1] & 0x100))
        return;
    if (sel & 4) {
        u32 ld[2];
        if ((vcpu.ldtr & ~3u) == 0 || !read_descriptor(vcpu.ldtr & ~7u, ld))
            return;
        base = desc_base(ld);
    } else {
        base = vcpu.gdt_base;
    }
    d[1] |= 0x100;
    *(volatile u32 *)(base + (sel & ~7u) + 4) = d[1];
}

/* The real selector that loads the ring-compressed copy of `sel`: a code
 * or data descriptor more privileged than GUEST_RING became GUEST_RING. */
static u32 compressed(u32 sel, const u32 d[2])
{
    if ((sel & ~3u) == 0)
        return sel;
    if (DESC_S(d) && DESC_DPL(d) < GUEST_RING)
        return (sel & ~3u) | GUEST_RING;
    return sel;
}

u32 real_selector(int sreg)
{
    ensure_shadow(vcpu.seg[sreg]);
    return compressed(vcpu.seg[sreg], &vcpu.seg_desc[2 * sreg]);
}

/* Load a data/stack segment register as mov, pop, lds... would, at virtual
 * CPL 0.  Returns 0 and the fault to raise if the hardware would fault. */
int load_segment(int sreg, u32 sel, int for_cs, u32 *vec, u32 *err)
{
    u32 d[2] = {0, 0};
    sel &= 0xffff;
    (void)for_cs;
    if ((sel & ~3u) == 0) {
        if (sreg == SS) {
            *vec = 13; *err = 0;
            return 0;
        }
    } else {
        if (!read_descriptor(sel, d)) {
            *vec = 13; *err = sel & ~3u;
            return 0;
        }
        u32 type = DESC_TYPE(d);
        if (sreg == SS) {
            /* writable data, RPL == DPL == CPL (0) */
            if (!DESC_S(d) || (type & 8) || !(type & 2) || (sel & 3) != 0 || DESC_DPL(d) != 0) {
                *vec = 13; *err = sel & ~3u;
                return 0;
            }
            if (!DESC_P(d)) {
                *vec = 12; *err = sel & ~3u;
                return 0;
            }
        } else {
            /* data, or readable code; DPL >= max(CPL, RPL) unless conforming code */
            int conforming = (type & 0xc) == 0xc;
            if (!DESC_S(d) || ((type & 8) && !(type & 2)) || (!conforming && DESC_DPL(d) < (sel & 3))) {
                *vec = 13; *err = sel & ~3u;
                return 0;
            }
            if (!DESC_P(d)) {
                *vec = 11; *err = sel & ~3u;
                return 0;
            }
        }
        mark_accessed(sel, d);
    }
    vcpu.seg[sreg] = sel;
    vcpu.seg_desc[2 * sreg] = d[0];
    vcpu.seg_desc[2 * sreg + 1] = d[1];
    return 1;
}

/* Make the real segment register follow the virtual one (DS/ES are
 * restored from the frame by the entry stub; SS by the exit path). */
static void commit_segment(struct frame *f, int sreg)
{
    u32 real = real_selector(sreg);
    switch (sreg) {
    case ES: f->r.es = real; break;
    case DS: f->r.ds = real; break;
    case FS: __asm__ volatile("movw %w0, %%fs" :: "r"(real)); break;
    case GS: __asm__ volatile("movw %w0, %%gs" :: "r"(real)); break;
    default: break;
    }
}

/* ------------------------------------------------------------------ */
/* Sites: find the record a wedge call came from (for fault EIPs) */

int site_of(u32 addr, struct site *out)
{
    const u8 *rec = (const u8 *)vcpu.sites;
    for (u32 i = 0; i < vcpu.nsites; i++, rec += 8) {
        u32 field = (u32)rec;
        u32 start = field + *(const s32 *)rec;
        u8 kind = rec[4], len = rec[5], insn_len = rec[6], flags = rec[7];
        if (kind >= 0xf0)
            continue;
        if (addr > start && addr <= start + len) {
            out->start = start;
            out->end = start + len;
            out->insn = (flags & 2) ? start + len - insn_len : start;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Handlers: flags */

/* Continue at `eip` with ESP moved by `delta` and real flags `eflags`.
 * A push overwrites the stub's return-address and flags slots (they are
 * the guest's stack top), so pushing handlers read those first. */
static void __attribute__((noreturn)) finish(struct frame *f, u32 eip, u32 eflags, s32 delta)
{
    leave(&f->r, eip, 0, eflags, guest_esp(f) + delta);
}

/* pushf and popf: the 32-bit forms take the assembly fast paths in
 * entry.S (w_pushf, w_popf); these C versions serve the 16-bit forms, and
 * popf when it re-enables interrupts with one waiting. */
static void pushf_common(struct frame *f, int w16)
{
    u32 eip = f->ret, real = f->eflags;
    u32 v = virtual_eflags(real);
    u32 esp = guest_esp(f) - (w16 ? 2 : 4);
    if (w16)
        *(u16 *)esp = (u16)v;
    else
        *(u32 *)esp = v;
    finish(f, eip, real, w16 ? -2 : -4);
}

static void popf_common(struct frame *f, int w16)
{
    u32 esp = guest_esp(f);
    u32 v = w16 ? ((virtual_eflags(f->eflags) & 0xffff0000u) | *(u16 *)esp) : *(u32 *)esp;
    u32 real;
    set_virtual_eflags(v, &real, 1);
    maybe_deliver_pending(f, f->ret, virtual_eflags(real), esp + (w16 ? 2 : 4));
    finish(f, f->ret, real, w16 ? 2 : 4);
}

void h_pushf16(struct frame *f) { pushf_common(f, 1); }
void h_popf16(struct frame *f) { popf_common(f, 1); }
void h_popf(struct frame *f) { popf_common(f, 0); }

/* ------------------------------------------------------------------ */
/* Port I/O goes to the backend's device path */

void h_io(struct frame *f)
{
    u8 d = arg8(f);
    struct pio p = {0};
    p.size = 1 << (d & 3);
    p.flags = (d & 4) ? 1 : 0;
    p.port = (d & 8) ? arg8(f) : (u16)f->r.edx;
    if (!(d & 16)) {
        if (!(d & 4))
            p.value = f->r.eax;
        u32 v = be_pio(&p);
        if (d & 4) {
            u32 mask = p.size == 4 ? 0xffffffffu : (1u << (8 * p.size)) - 1;
            f->r.eax = (f->r.eax & ~mask) | (v & mask);
        }
        return;
    }
    /* ins/outs: ES:EDI or DS:ESI, DF direction, ECX count with rep */
    p.flags |= 2 | ((f->eflags & EFL_DF) ? 4 : 0);
    p.count = (d & 32) ? f->r.ecx : 1;
    if (p.count == 0)
        return;
    u32 *ptr = (d & 4) ? &f->r.edi : &f->r.esi;
    p.buf = *ptr + ((d & 4) ? seg_base(ES) : seg_base(DS));
    u32 done = be_pio(&p);
    s32 step = (s32)p.size * ((f->eflags & EFL_DF) ? -1 : 1);
    *ptr += step * (s32)done;
    if (d & 32)
        f->r.ecx -= done;
}

/* ------------------------------------------------------------------ */
/* Control and debug registers */

static void cr0_changed(u32 old)
{
    /* Paging on/off, write protection: the backend's MMU needs to know.
     * TS, EM, MP, NE stay virtual (the guest never reaches the FPU here). */
    if ((old ^ vcpu.cr0) & 0x80010001u)
        be_paging(vcpu.cr0, vcpu.cr4);
}

void h_movcr(struct frame *f)
{
    u8 d = arg8(f);
    int reg = d & 7, n = (d >> 3) & 7, write = d & 64, debug = d & 128;
    if (debug) {
        if (write) {
            vcpu.dr[n] = get_reg(f, reg);
        } else {
            u32 v = vcpu.dr[n];
            if (n == 7)
                v |= 0x400;                     /* DR7 bit 10 reads as 1 */
            if (n == 6)
                v |= 0xffff0ff0u;
            set_reg(f, reg, v);
        }
        return;
    }
    if (!write) {
        u32 v = n == 0 ? vcpu.cr0 : n == 2 ? vcpu.cr2 : n == 3 ? vcpu.cr3 : vcpu.cr4;
        set_reg(f, reg, v);
        return;
    }
    u32 v = get_reg(f, reg);
    switch (n) {
    case 0: {
        u32 old = vcpu.cr0;
        vcpu.cr0 = v | 0x10;                    /* ET is hard-wired */
        cr0_changed(old);
        break;
    }
    case 2:
        vcpu.cr2 = v;
        break;
    case 3:
        vcpu.cr3 = v;
        if (be_set_cr3(v) < 0)
            wedge_panic("the hypervisor refused the page directory (mov to CR3)");
        break;
    case 4: {
        u32 old = vcpu.cr4;
        vcpu.cr4 = v;
        if ((old ^ v) & 0xb0)                   /* PSE, PAE, PGE */
            be_paging(vcpu.cr0, vcpu.cr4);
        break;
    }
    default:
        raise_fault(f, 6, 0, 0);                /* CR1, CR5-7: #UD */
    }
}

/* ------------------------------------------------------------------ */
/* Segment registers */

static void __attribute__((noreturn)) seg_fault(struct frame *f, u32 vec, u32 err, int memcall)
{
    if (memcall)
        f->r.eax = vcpu.scratch;
    raise_fault(f, vec, 1, err);
}

static void sreg_load(struct frame *f, int sreg, u32 sel, int memcall)
{
    u32 vec, err;
    if (sreg == CS)
        raise_fault(f, 6, 0, 0);                /* mov to CS is #UD */
    if (!load_segment(sreg, sel, 0, &vec, &err))
        seg_fault(f, vec, err, memcall);
    commit_segment(f, sreg);
}

void h_sreg(struct frame *f)
{
    u8 d = arg8(f);
    int sreg = d & 7, reg = (d >> 3) & 7, op = d >> 6;
    if (op == 0) {
        sreg_load(f, sreg, get_reg(f, reg), 0);
        if (sreg == SS)
            leave(&f->r, f->ret, 0, f->eflags, guest_esp(f));
    } else if (op == 1) {
        set_reg(f, reg, vcpu.seg[sreg] & 0xffff);
    } else {
        set_reg16(f, reg, (u16)vcpu.seg[sreg]);
    }
}

void h_sreg_m(struct frame *f)
{
    u8 d = arg8(f);
    int sreg = d & 7;
    u32 addr = memcall_addr(f);
    if (d & 8) {
        *(u16 *)addr = (u16)vcpu.seg[sreg];
        f->r.eax = vcpu.scratch;
        return;
    }
    sreg_load(f, sreg, *(u16 *)addr, 1);
    f->r.eax = vcpu.scratch;
    if (sreg == SS)
        leave(&f->r, f->ret, 0, f->eflags, guest_esp(f));
}

void h_pushseg(struct frame *f)
{
    u8 d = arg8(f);
    int w16 = d & 8;
    u32 eip = f->ret, real = f->eflags;
    u32 esp = guest_esp(f) - (w16 ? 2 : 4);
    if (w16)
        *(u16 *)esp = (u16)vcpu.seg[d & 7];
    else
        *(u32 *)esp = vcpu.seg[d & 7] & 0xffff;   /* a 32-bit push writes 4 bytes */
    finish(f, eip, real, w16 ? -2 : -4);
}

void h_popseg(struct frame *f)
{
    u8 d = arg8(f);
    int w16 = d & 8;
    u32 esp = guest_esp(f);
    sreg_load(f, d & 7, w16 ? *(u16 *)esp : *(u32 *)esp, 0);
    finish(f, f->ret, f->eflags, w16 ? 2 : 4);
}

void h_lxs(struct frame *f)
{
    u8 d = arg8(f);
    int sreg = d & 7, reg = (d >> 3) & 7, w16 = d & 64;
    u32 addr = memcall_addr(f);
    u32 off = w16 ? *(u16 *)addr : *(u32 *)addr;
    u16 sel = *(u16 *)(addr + (w16 ? 2 : 4));
    f->r.eax = vcpu.scratch;
    sreg_load(f, sreg, sel, 0);
    if (w16)
        set_reg16(f, reg, (u16)off);
    else if (reg == 4)
        /* lss ..., %esp: the new stack takes effect at the exit */
        leave(&f->r, f->ret, 0, f->eflags, off);
    else
        set_reg(f, reg, off);
    if (sreg == SS)
        leave(&f->r, f->ret, 0, f->eflags, guest_esp(f));
}

/* ------------------------------------------------------------------ */
/* Descriptor-table registers */

void h_dtr(struct frame *f)
{
    u8 d = arg8(f);
    int op = d & 3, w16 = d & 4;
    u32 addr = memcall_addr(f);
    f->r.eax = vcpu.scratch;
    u32 *base = op & 1 ? &vcpu.idt_base : &vcpu.gdt_base;
    u32 *limit = op & 1 ? &vcpu.idt_limit : &vcpu.gdt_limit;
    if (op >= 2) {                              /* sgdt, sidt */
        *(u16 *)addr = (u16)*limit;
        *(u32 *)(addr + 2) = w16 ? (*base & 0xffffff) : *base;
        return;
    }
    *limit = *(u16 *)addr;
    *base = *(u32 *)(addr + 2) & (w16 ? 0xffffff : 0xffffffffu);
    if (op == 0 && be_set_gdt(vcpu.gdt_base, vcpu.gdt_limit) < 0)
        raise_fault(f, 13, 1, 0);
}

static u32 sys_read(struct frame *f, int op, int mem)
{
    (void)f; (void)mem;
    switch (op) {
    case 0: return vcpu.ldtr;
    case 1: return vcpu.tr;
    default: return vcpu.cr0 & 0xffff;          /* smsw */
    }
}

static void sys_write(struct frame *f, int op, u16 v, int memcall)
{
    u32 d[2];
    switch (op) {
    case 2: /* lldt */
        if ((v & ~3u) == 0) {
            vcpu.ldtr = 0;
            be_set_ldt(0, 0);
            return;
        }
        if ((v & 4) || !read_descriptor(v, d) || DESC_S(d) || DESC_TYPE(d) != 2)
            seg_fault(f, 13, v & ~3u, memcall);
        if (!DESC_P(d))
            seg_fault(f, 11, v & ~3u, memcall);
        vcpu.ldtr = v;
        be_set_ldt(desc_base(d), desc_limit(d));
        return;
    case 3: /* ltr: the TSS becomes busy in the guest's own GDT */
        if ((v & ~3u) == 0 || (v & 4) || !read_descriptor(v, d) || DESC_S(d) ||
            (DESC_TYPE(d) != 9 && DESC_TYPE(d) != 1))
            seg_fault(f, 13, v & ~3u, memcall);
        if (!DESC_P(d))
            seg_fault(f, 11, v & ~3u, memcall);
        *(volatile u32 *)(vcpu.gdt_base + (v & ~7u) + 4) = d[1] | 0x200;
        vcpu.tr = v;
        return;
    case 7: { /* lmsw: PE, MP, EM, TS; PE cannot be cleared */
        u32 old = vcpu.cr0;
        vcpu.cr0 = (vcpu.cr0 & ~0xeu) | (v & 0xf) | (old & 1);
        cr0_changed(old);
        return;
    }
    }
}

/* verr/verw: ZF = 1 if the segment is readable/writable at CPL 0 */
static int verify(u16 sel, int write)
{
    u32 d[2];
    if ((sel & ~3u) == 0 || !read_descriptor(sel, d) || !DESC_S(d))
        return 0;
    u32 type = DESC_TYPE(d);
    int conforming = (type & 0xc) == 0xc;
    if (!conforming && DESC_DPL(d) < (sel & 3))
        return 0;
    if (write)
        return !(type & 8) && (type & 2);
    return !(type & 8) || (type & 2);
}

static void sys_op(struct frame *f, int op, int reg, int w16, u32 addr, int memcall)
{
    if (op <= 1 || op == 6) {                   /* sldt, str, smsw: store */
        u32 v = sys_read(f, op, memcall);
        if (memcall)
            *(u16 *)addr = (u16)v;
        else if (w16 || op == 6)
            /* smsw r32 leaves the upper half alone, as QEMU and so bare
             * do (the SDM calls it undefined); sldt/str zero-extend. */
            set_reg16(f, reg, (u16)v);
        else
            set_reg(f, reg, v & 0xffff);
        return;
    }
    u16 v = memcall ? *(u16 *)addr : (u16)get_reg(f, reg);
    if (op == 4 || op == 5) {
        if (verify(v, op == 5))
            f->eflags |= EFL_ZF;
        else
            f->eflags &= ~EFL_ZF;
        return;
    }
    sys_write(f, op, v, memcall);
}

void h_sys(struct frame *f)
{
    u8 d = arg8(f);
    sys_op(f, d & 7, (d >> 3) & 7, d & 64, 0, 0);
}

void h_sys_m(struct frame *f)
{
    u8 d = arg8(f);
    u32 addr = memcall_addr(f);
    f->r.eax = vcpu.scratch;
    vcpu.scratch = f->r.eax;
    sys_op(f, d & 7, 0, 0, addr, 1);
}

/* lar/lsl: ZF and the access rights or limit if the descriptor is visible */
static void larlsl(struct frame *f, int lsl, int dst, int w16, u16 sel)
{
    u32 d[2];
    int ok = 0;
    if ((sel & ~3u) != 0 && read_descriptor(sel, d)) {
        u32 type = DESC_TYPE(d);
        int conforming = DESC_S(d) && (type & 0xc) == 0xc;
        int valid = DESC_S(d) || (lsl ? (type == 1 || type == 2 || type == 3 || type == 9 || type == 11)
                                      : (type != 0 && type != 8 && type != 10 && type != 13 && type != 14 &&
                                         type != 15 ? 1 : 0) || type == 12 || type == 4 || type == 5);
        if (valid && (conforming || DESC_DPL(d) >= (sel & 3)))
            ok = 1;
        if (ok) {
            u32 v = lsl ? desc_limit(d) : (d[1] & 0x00f0ff00u);
            if (w16)
                set_reg16(f, dst, (u16)v);
            else
                set_reg(f, dst, v);
        }
    }
    if (ok)
        f->eflags |= EFL_ZF;
    else
        f->eflags &= ~EFL_ZF;
}

void h_lar(struct frame *f)
{
    u8 d = arg8(f);
    larlsl(f, d & 1, (d >> 1) & 7, d & 128, (u16)get_reg(f, (d >> 4) & 7));
}

void h_lar_m(struct frame *f)
{
    u8 d = arg8(f);
    u32 addr = memcall_addr(f);
    f->r.eax = vcpu.scratch;
    larlsl(f, d & 1, (d >> 1) & 7, d & 128, *(u16 *)addr);
}

/* arpl: raise the destination selector's RPL to the source's */
static u16 arpl(struct frame *f, u16 dst, u16 src)
{
    if ((dst & 3) < (src & 3)) {
        f->eflags |= EFL_ZF;
        return (dst & ~3) | (src & 3);
    }
    f->eflags &= ~EFL_ZF;
    return dst;
}

void h_arpl(struct frame *f)
{
    u8 d = arg8(f);
    int dst = d & 7, src = (d >> 3) & 7;
    set_reg16(f, dst, arpl(f, (u16)get_reg(f, dst), (u16)get_reg(f, src)));
}

void h_arpl_m(struct frame *f)
{
    u8 d = arg8(f);
    u32 addr = memcall_addr(f);
    f->r.eax = vcpu.scratch;
    *(u16 *)addr = arpl(f, *(u16 *)addr, (u16)get_reg(f, (d >> 3) & 7));
}

/* ------------------------------------------------------------------ */
/* Everything else */

void h_invlpg(struct frame *f)
{
    (void)arg8(f);
    u32 addr = memcall_addr(f);
    f->r.eax = vcpu.scratch;
    be_invlpg(addr);
}

void h_misc(struct frame *f)
{
    u8 op = arg8(f);
    switch (op) {
    case 0: /* clts */
        vcpu.cr0 &= ~8u;
        return;
    case 1: /* invd */
    case 2: /* wbinvd: no caches to manage in a virtual machine */
        return;
    case 3: { /* cpuid: the real CPU's answer, without what the VM cannot give */
        u32 a = f->r.eax, b, c = f->r.ecx, dd;
        __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(dd));
        if (f->r.eax == 1) {
            /* MONITOR/MWAIT, VMX, SMX, PCID, XSAVE, OSXSAVE; SEP */
            c &= ~((1u << 3) | (1u << 5) | (1u << 6) | (1u << 17) | (1u << 26) | (1u << 27));
            dd &= ~(1u << 11);
        } else if (f->r.eax == 7 && f->r.ecx == 0) {
            b &= ~((1u << 10) | (1u << 20));    /* INVPCID, SMAP */
            c &= ~(1u << 22);                   /* RDPID */
        } else if (f->r.eax == 0x80000001u) {
            c &= ~((1u << 2) | (1u << 12));     /* SVM, SKINIT */
            dd &= ~(1u << 11);                  /* SYSCALL */
        }
        f->r.eax = a; f->r.ebx = b; f->r.ecx = c; f->r.edx = dd;
        return;
    }
    case 4: { /* rdmsr */
        u32 lo, hi;
        if (be_rdmsr(f->r.ecx, &lo, &hi) < 0)
            raise_fault(f, 13, 1, 0);
        f->r.eax = lo; f->r.edx = hi;
        vcpu.msr_count++;
        return;
    }
    case 5: /* wrmsr */
        if (be_wrmsr(f->r.ecx, f->r.eax, f->r.edx) < 0)
            raise_fault(f, 13, 1, 0);
        vcpu.msr_count++;
        return;
    case 6: { /* rdtsc: the hypervisor keeps the TSC virtual and deterministic */
        u32 lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        f->r.eax = lo; f->r.edx = hi;
        return;
    }
    case 7: /* rsm outside SMM */
        raise_fault(f, 6, 0, 0);
    case 8: /* hlt */
        if (!vif())
            be_halt();
        be_block();
        maybe_deliver_pending(f, f->ret, virtual_eflags(f->eflags), guest_esp(f));
        return;
    case 20: { /* rdtscp: the virtual TSC (as rdtsc), and TSC_AUX 0: one vCPU */
        u32 lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        f->r.eax = lo; f->r.edx = hi; f->r.ecx = 0;
        return;
    }
    case 24: /* wbnoinvd: as wbinvd */
        return;
    case 19: /* rdpmc: the virtual CPU has no performance counters */
        raise_fault(f, 13, 1, 0);
    default:
        /* 9-31 but 19, 20 and 24: sysenter sysexit syscall sysret, XSAVE
         * (xsetbv xgetbv xsaves xrstors), monitor mwait, invpcid, clac stac,
         * rdpid, vmcall vmmcall vmfunc, getsec, VMX, SVM.  The virtual CPU
         * offers none of these features (cpuid above hides them; no PMU):
         * the CPU's answer is #UD. */
        if (op >= 9 && op <= 31)
            raise_fault(f, 6, 0, 0);
        break;
    }
    wedge_panic("w_misc: unknown operation");
}
