/* kinds: shared definitions between main.c, ops.S and flow.S. */
#ifndef KINDS_H
#define KINDS_H

/* Extra GDT entries (indexes 6..12) built by main.c. */
#define SEL_CODE2   0x30 /* ring-0 code alias, flat */
#define SEL_SEGBUF  0x38 /* ring-0 data, base = seg_buf, limit 0xff (bytes) */
#define SEL_UNUSED  0x40 /* ring-0 data, never loaded (A=0), limit 0x12345 */
#define SEL_LDT     0x48 /* LDT descriptor */
#define SEL_DATA3   0x50 /* ring-3 data */
#define SEL_XONLY   0x58 /* ring-0 execute-only code */
#define SEL_LDT_DATA 0x04 /* LDT entry 0, TI=1, RPL0: base = ldt_buf */

#define SEGBUF_MAGIC  0x5E6B0F00
#define SEGBUF2_MAGIC 0x5E6B0F02
#define LDTBUF_MAGIC  0x1D7B0F01

#define VEC_SOFT  0x40 /* int $0x40: handler adds 1 to EAX */
#define VEC_SOFT2 0x42 /* what vector 0x40 points at in the IDT copy */

#endif
