/*
 * The frontend, part 2: control transfer.  Interrupts and exceptions are
 * delivered through the guest's own IDT here, in the guest, exactly as the
 * hardware would: gate lookup, privilege and stack switch, the frame with
 * the guest-visible (virtual) CS and EFLAGS, IF cleared by interrupt gates.
 * iret restores the virtual IF and, if an interrupt became deliverable,
 * redirects into its handler instead of returning (lguest measured 7x on
 * TCP without this re-enable check; every re-enable point checks).
 */
#include "wedge.h"

#define HAS_ERR(v) ((v) == 8 || ((v) >= 10 && (v) <= 14) || (v) == 17)
#define CONTRIBUTORY(v) ((v) == 0 || ((v) >= 10 && (v) <= 13))

static u32 user_frame[5];                       /* iret frame for native returns to ring 3 */
static struct uframe uframe;                    /* what be_return_to_user gets */

static u32 current_cs(void)
{
    u32 cs;
    __asm__ volatile("movl %%cs, %0" : "=r"(cs));
    return cs;
}

/* Leave the wedge: restore the registers in *r, switch to the real stack
 * selector for the virtual SS at `esp`, and continue at cs:eip with real
 * flags `eflags` (cs 0: the current code segment).
 *
 * The iret frame goes just below `esp`, which is where the entry stub saved
 * the guest's registers: copy them out before writing it. */
void leave(struct regs *r, u32 eip, u32 cs, u32 eflags, u32 esp)
{
    vcpu.exit_frame = *r;
    u32 *frame = (u32 *)(esp - 12);
    frame[0] = eip;
    frame[1] = cs ? cs : current_cs();
    frame[2] = eflags;
    vcpu.exit_esp = esp - 12;
    vcpu.exit_ss = real_selector(SS);
    wedge_exit();
}

static u32 real_eflags_of(u32 virt)
{
    return (virt & ~(EFL_IF | EFL_SYS | EFL_RF | EFL_VM)) | EFL_IF | 0x2;
}

/* Enter guest user mode.  A kernel at ring 1 returns natively (an iret to
 * ring 3) when user mode keeps the real IF on and IOPL 0, which is what the
 * real flags are while the guest runs anyway; otherwise the hypervisor
 * loads the context, because only it can make the real IF and IOPL the
 * user's (an iret at ring 1 may change neither).  A kernel at ring 3 always
 * asks: the CPU cannot tell its user mode from its kernel mode, so the
 * hypervisor must switch the hole out of the address space. */
void leave_to_user(struct regs *r, u32 eip, u32 cs, u32 eflags, u32 esp, u32 ss)
{
    eflags &= ~(EFL_RF | EFL_VM);
    if (GUEST_RING == 3 || !(eflags & EFL_IF) || (eflags & EFL_IOPL)) {
        uframe.r = *r;
        uframe.fs = real_selector(FS);
        uframe.gs = real_selector(GS);
        uframe.eip = eip;
        uframe.cs = cs;
        uframe.eflags = eflags;
        uframe.esp = esp;
        uframe.ss = ss;
        vcpu.depth--;
        be_return_to_user(&uframe);
    }
    user_frame[0] = eip;
    user_frame[1] = cs;
    user_frame[2] = real_eflags_of(eflags);
    user_frame[3] = esp;
    user_frame[4] = ss;
    vcpu.exit_frame = *r;
    vcpu.exit_esp = (u32)user_frame;
    vcpu.exit_ss = HYP_DS;
    wedge_exit();
}

/* The kernel stack of the guest's TSS, for entries from ring 3. */
static int tss_stack(u32 *esp, u32 *ss)
{
    u32 d[2];
    if ((vcpu.tr & ~3u) == 0 || !read_descriptor(vcpu.tr, d))
        return 0;
    u32 base = (d[0] >> 16) | ((d[1] & 0xff) << 16) | (d[1] & 0xff000000u);
    *esp = *(u32 *)(base + 4);
    *ss = *(u32 *)(base + 8) & 0xffff;
    return 1;
}

struct fault { int vec; u32 err; };

/* One attempt; on failure *out says which fault delivery itself raised. */
static int try_deliver(struct regs *r, int vec, int has_err, u32 err, struct ictx *ctx, u32 stack,
                       int soft, struct fault *out)
{
    int ext = soft ? 0 : 1;
    if ((u32)vec * 8 + 7 > vcpu.idt_limit) {
        out->vec = 13; out->err = vec * 8 + 2 + ext;
        return 0;
    }
    u32 lo = *(u32 *)(vcpu.idt_base + vec * 8), hi = *(u32 *)(vcpu.idt_base + vec * 8 + 4);
    u32 type = (hi >> 8) & 0x1f, dpl = (hi >> 13) & 3;
    int from_user = (ctx->cs & 3) == 3;
    if (type != 0x0e && type != 0x0f) {
        out->vec = 13; out->err = vec * 8 + 2 + ext;
        return 0;
    }
    if (soft && dpl < (from_user ? 3u : 0u)) {
        out->vec = 13; out->err = vec * 8 + 2;
        return 0;
    }
    if (!(hi & 0x8000)) {
        out->vec = 11; out->err = vec * 8 + 2 + ext;
        return 0;
    }
    u32 sel = lo >> 16, offset = (lo & 0xffff) | (hi & 0xffff0000u);
    u32 d[2];
    if ((sel & ~3u) == 0 || !read_descriptor(sel, d) || !(((d[1] >> 11) & 3) == 3)) {
        out->vec = 13; out->err = (sel & ~3u) + ext;
        return 0;
    }
    if (!((d[1] >> 15) & 1)) {
        out->vec = 11; out->err = (sel & ~3u) + ext;
        return 0;
    }
    u32 target_dpl = (d[1] >> 13) & 3;
    u32 words[6], n = 0, esp = stack;
    if (from_user) {
        /* Ring 3 -> 0: the handler's stack comes from the guest's TSS (the
         * hypervisor may already have switched to it: then `stack` is set). */
        u32 kesp, kss, fv, fe;
        if (target_dpl != 0) {
            out->vec = 13; out->err = (sel & ~3u) + ext;
            return 0;
        }
        if (!tss_stack(&kesp, &kss)) {
            out->vec = 10; out->err = vcpu.tr & ~3u;
            return 0;
        }
        if (!load_segment(SS, kss, 0, &fv, &fe)) {
            out->vec = 10; out->err = kss & ~3u;
            return 0;
        }
        if (!esp)
            esp = kesp;
    }
    if (has_err)
        words[n++] = err;
    words[n++] = ctx->eip;
    words[n++] = ctx->cs & 0xffff;
    words[n++] = ctx->eflags;
    if (from_user) {
        words[n++] = ctx->esp;
        words[n++] = ctx->ss & 0xffff;
    }
    esp -= 4 * n;
    for (u32 i = 0; i < n; i++)
        ((u32 *)esp)[i] = words[i];
    /* The handler runs in the gate's code segment with the ring-compressed
     * copy; an interrupt gate clears the virtual IF. */
    vcpu.seg[CS] = (sel & ~3u);
    vcpu.seg_desc[2 * CS] = d[0];
    vcpu.seg_desc[2 * CS + 1] = d[1];
    if (type == 0x0e)
        set_vif(0);
    u32 flags = real_eflags_of(ctx->eflags) & ~(EFL_TF | EFL_RF);
    vcpu.eflags_sys &= ~EFL_NT;
    vcpu.delivered++;
    leave(r, offset, real_selector(CS), flags, esp);
    return 1;
}

void deliver(struct regs *r, int vec, int has_err, u32 err, struct ictx *ctx, u32 stack, int soft)
{
    /* The interrupt frame may be written over the stub's saved registers
     * (they sit just below the interrupted stack pointer): keep a copy. */
    struct regs saved = *r;
    struct fault f;
    r = &saved;
    for (;;) {
        try_deliver(r, vec, has_err, err, ctx, stack, soft, &f);    /* returns only on failure */
        if (soft)
            ctx->eip -= soft;                   /* faults of int n report the int itself */
        if (vec == 8) {
            be_console("afterburn wedge: triple fault\n", 30);
            be_crash();
        }
        int dbl = (CONTRIBUTORY(vec) && CONTRIBUTORY(f.vec)) || (vec == 14 && (CONTRIBUTORY(f.vec) || f.vec == 14));
        vec = dbl ? 8 : f.vec;
        err = dbl ? 0 : f.err;
        has_err = 1;
        soft = 0;
    }
}

/* Raise `vec` for the instruction at the current site (it did not complete). */
void raise_fault(struct frame *f, int vec, int has_err, u32 err)
{
    struct site s;
    struct ictx ctx = {0};
    if (!site_of(f->ret, &s))
        wedge_panic("fault at an address that is not a site");
    ctx.eip = s.insn;
    ctx.cs = vcpu.seg[CS];
    ctx.eflags = virtual_eflags(f->eflags);
    deliver(&f->r, vec, has_err, err, &ctx, guest_esp(f), 0);
}

/* At a re-enable point: if IF is now set and something is pending, take
 * it as the instruction completes (at eip, with the given virtual state). */
void maybe_deliver_pending(struct frame *f, u32 eip, u32 eflags_virtual, u32 esp)
{
    if (!(eflags_virtual & EFL_IF) || !be_pending())
        return;
    int v = be_inta();
    if (v < 0)
        return;
    struct ictx ctx = {eip, vcpu.seg[CS], eflags_virtual, 0, 0};
    deliver(&f->r, v, 0, 0, &ctx, esp, 0);
}

/* sti patches call through vcpu.pending_entry: a bare ret (w_ret) while
 * nothing waits, w_pending while the backend may have an interrupt.  The
 * hypervisor keeps it in step when it raises or clears pending; the wedge,
 * when it takes events. */
void set_pending_entry(int pending)
{
    vcpu.pending_entry = pending ? (u32)w_pending : (u32)w_ret;
}

/* sti found an interrupt pending (the site's inline check): the hardware
 * takes it after the next instruction, so let the backend do that. */
void h_pending(struct frame *f)
{
    if (vif() && be_pending())
        be_sti_shadow(f->ret);
}

/* ------------------------------------------------------------------ */
/* Returns and far transfers (same ring, or back to ring 3) */

static void check_code_selector(struct frame *f, u32 sel, u32 d[2])
{
    if ((sel & ~3u) == 0 || !read_descriptor(sel, d) || ((d[1] >> 11) & 3) != 3)
        raise_fault(f, 13, 1, sel & ~3u);
    if (!((d[1] >> 15) & 1))
        raise_fault(f, 11, 1, sel & ~3u);
}

static void set_cs(u32 sel, u32 d[2])
{
    vcpu.seg[CS] = sel;
    vcpu.seg_desc[2 * CS] = d[0];
    vcpu.seg_desc[2 * CS + 1] = d[1];
}

/* Return to ring 3: data segments the user may not use become null, as the
 * hardware does; then a real iret to the user context. */
static void __attribute__((noreturn)) return_to_user(struct frame *f, u32 eip, u32 cs, u32 efl_virt, u32 uesp,
                                                     u32 uss)
{
    u32 d[2];
    read_descriptor(cs, d);
    set_cs(cs, d);
    vcpu.seg[SS] = uss;
    if (read_descriptor(uss, d)) {
        vcpu.seg_desc[2 * SS] = d[0];
        vcpu.seg_desc[2 * SS + 1] = d[1];
    }
    static const int data[] = {ES, DS, FS, GS};
    for (int i = 0; i < 4; i++) {
        u32 *sd = &vcpu.seg_desc[2 * data[i]];
        int conforming_code = (sd[1] >> 12 & 1) && ((sd[1] >> 8) & 0xc) == 0xc;
        if ((vcpu.seg[data[i]] & ~3u) && ((sd[1] >> 13) & 3) < 3 && !conforming_code)
            vcpu.seg[data[i]] = 0;              /* ring 3 may not keep kernel data segments */
    }
    if ((efl_virt & EFL_IF) && be_pending()) {
        int v = be_inta();
        if (v >= 0) {
            struct ictx ctx = {eip, cs, efl_virt, uesp, uss};
            deliver(&f->r, v, 0, 0, &ctx, 0, 0);
        }
    }
    refresh_descriptors();
    /* User selectors are the guest's own: same GDT index, DPL 3 unchanged. */
    f->r.ds = real_selector(DS);
    f->r.es = real_selector(ES);
    leave_to_user(&f->r, eip, cs, efl_virt, uesp, uss);
}

void h_iret(struct frame *f)
{
    int w16 = arg8(f) & 1;
    u32 *p = (u32 *)guest_esp(f);
    u32 eip, cs, efl, n;
    if (w16) {
        u16 *q = (u16 *)p;
        eip = q[0]; cs = q[1]; efl = (virtual_eflags(f->eflags) & 0xffff0000u) | q[2]; n = 6;
    } else {
        eip = p[0]; cs = p[1] & 0xffff; efl = p[2]; n = 12;
    }
    if (efl & EFL_VM)
        wedge_panic("iret to virtual-8086 mode is not supported");
    if (vcpu.eflags_sys & EFL_NT)
        wedge_panic("iret with NT set (task return) is not supported");
    u32 d[2], real;
    check_code_selector(f, cs, d);
    set_virtual_eflags(efl, &real, 1);
    u32 esp = guest_esp(f) + n;
    if ((cs & 3) == 3) {
        u32 uesp = w16 ? ((u16 *)p)[3] : p[3], uss = w16 ? ((u16 *)p)[4] : p[4] & 0xffff;
        return_to_user(f, eip, cs, virtual_eflags(real), uesp, uss);
    }
    if ((cs & 3) != 0)
        wedge_panic("iret to ring 1 or 2 is not supported");
    set_cs(cs, d);
    maybe_deliver_pending(f, eip, virtual_eflags(real), esp);
    leave(&f->r, eip, real_selector(CS), real, esp);
}

void h_lret(struct frame *f)
{
    u8 desc = arg8(f);
    int w16 = desc & 1;
    u32 imm = (desc & 2) ? arg16(f) : 0;
    u32 *p = (u32 *)guest_esp(f);
    u32 eip = w16 ? ((u16 *)p)[0] : p[0];
    u32 cs = w16 ? ((u16 *)p)[1] : p[1] & 0xffff;
    u32 esp = guest_esp(f) + (w16 ? 4 : 8) + imm;
    u32 d[2];
    check_code_selector(f, cs, d);
    if ((cs & 3) == 3) {
        u32 *q = (u32 *)esp;
        return_to_user(f, eip, cs, virtual_eflags(f->eflags), q[0], q[1] & 0xffff);
    }
    set_cs(cs, d);
    leave(&f->r, eip, real_selector(CS), f->eflags, esp);
}

static void __attribute__((noreturn)) far_transfer(struct frame *f, int call, int w16, u32 off, u32 sel)
{
    u32 d[2];
    check_code_selector(f, sel, d);
    int conforming = ((d[1] >> 8) & 0xc) == 0xc;
    if ((!conforming && ((d[1] >> 13) & 3) != 0) || (sel & 3) != 0)
        raise_fault(f, 13, 1, sel & ~3u);
    u32 esp = guest_esp(f), ret = f->ret, real = f->eflags;    /* pushes overwrite these slots */
    if (call) {
        if (w16) {
            esp -= 4;
            ((u16 *)esp)[0] = (u16)ret;
            ((u16 *)esp)[1] = (u16)vcpu.seg[CS];
        } else {
            esp -= 8;
            ((u32 *)esp)[0] = ret;
            ((u32 *)esp)[1] = vcpu.seg[CS] & 0xffff;
        }
    }
    set_cs(sel, d);
    leave(&f->r, off, real_selector(CS), real, esp);
}

void h_far(struct frame *f)
{
    u8 desc = arg8(f);
    int w16 = desc & 2;
    u32 off = w16 ? arg16(f) : arg32(f);
    u32 sel = arg16(f);
    far_transfer(f, desc & 1, w16, off, sel);
}

void h_far_m(struct frame *f)
{
    u8 desc = arg8(f);
    int w16 = desc & 2;
    u32 addr = memcall_addr(f);
    f->r.eax = vcpu.scratch;
    u32 off = w16 ? *(u16 *)addr : *(u32 *)addr;
    u32 sel = *(u16 *)(addr + (w16 ? 2 : 4));
    far_transfer(f, desc & 1, w16, off, sel);
}

/* ------------------------------------------------------------------ */
/* Software interrupts from the guest kernel */

static void soft_int(struct frame *f, int vec, int insn_len)
{
    struct ictx ctx = {f->ret, vcpu.seg[CS], virtual_eflags(f->eflags), 0, 0};
    deliver(&f->r, vec, 0, 0, &ctx, guest_esp(f), insn_len);
}

void h_int(struct frame *f) { int v = arg8(f); soft_int(f, v, 2); }
void h_int3(struct frame *f) { soft_int(f, 3, 1); }

void h_into(struct frame *f)
{
    if (f->eflags & EFL_OF)
        soft_int(f, 4, 1);
}

/* ------------------------------------------------------------------ */
/* Traps and event upcalls from the hypervisor */

/* `fr` is the interrupt frame the hypervisor pushed (with the error code
 * first where `info` says there is one); see bounce.S and wedge/layout.py. */
void wedge_trap(struct regs *r, u32 info, u32 *fr)
{
    int vec = info & TRAP_VECTOR, has_err = 0, soft = 0;
    u32 err = 0;
    if (info != UPCALL_INFO && (info & TRAP_HAS_ERROR)) {
        has_err = 1;
        err = *fr++;
    }
    if (info != UPCALL_INFO && (info & TRAP_SOFTWARE))
        soft = (info >> TRAP_SOFT_LEN_SHIFT) & 15;     /* instruction length */
    int from_user = (fr[1] & 3) == 3;
    struct ictx ctx = {fr[0], fr[1], fr[2], from_user ? fr[3] : 0, from_user ? fr[4] : 0};
    u32 stack = (u32)(fr + (from_user ? 5 : 3));
    if (info == UPCALL_INFO) {
        vec = be_take_event();
        if (vec < 0) {
            /* Nothing to deliver after all: resume where we were. */
            set_vif(!!(ctx.eflags & EFL_IF));
            if (from_user)
                leave_to_user(r, ctx.eip, ctx.cs, ctx.eflags, ctx.esp, ctx.ss);
            leave(r, ctx.eip, real_selector(CS), real_eflags_of(ctx.eflags), stack);
        }
    } else if (vec == 14) {
        vcpu.cr2 = be_cr2();
    }
    deliver(r, vec, has_err, err, &ctx, stack, soft);
}
