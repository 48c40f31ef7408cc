"""``afterburn run``."""
from __future__ import annotations

import sys

from rich.table import Table

from .common import err, positive_int, print_json


def add_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="run a multiboot kernel on the emulated PC",
        description="Run a multiboot kernel.  The exit status is the value the guest wrote to isa-debug-exit "
                    "(port 0xf4, 0-255), or 248 escape (an unrewritten sensitive instruction reached the hypervisor), "
                    "249 killed by the hypervisor, 250 halted, 251 fault (triple fault), 252 timeout, "
                    "253 max-insns, 254 machine error.",
    )  # fmt: skip
    p.add_argument("kernel", help="multiboot v1 ELF kernel")
    p.add_argument("--backend",
                   help="backend to run on (default: the one a rewritten image names, else the native reference)")
    p.add_argument("--max-insns", type=positive_int, help="stop after this many guest instructions")
    p.add_argument("--timeout", type=float, default=60.0, help="stop after this many seconds of wall time (60)")
    p.add_argument("--memory", type=positive_int, default=32, help="guest RAM in MiB (32)")
    p.add_argument("--cmdline", help="multiboot command line (default: the kernel path)")
    p.add_argument("--digest", action="append", default=[], metavar="SYMBOL|ADDR:LEN",
                   help="also digest this guest memory in the Observation (default: .data); repeatable")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the whole Observation as JSON instead")
    p.set_defaults(func=command)


def _print_run_summary(obs, path: str) -> None:
    st = obs.stats
    t = Table(title=f"{path} on {obs.backend}", title_justify="left", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("ending", f"{obs.ending.describe()} (exit status {obs.ending.status})")
    t.add_row("instructions", f"{st.instructions:,}")
    t.add_row("virtual time", f"{st.virtual_ns / 1e6:.3f} ms ({st.idle_ns / 1e6:.3f} ms idle in hlt)")
    t.add_row("interrupts", f"{st.interrupts:,} delivered, {st.halts:,} hlt")
    if st.exceptions:
        t.add_row("exceptions", ", ".join(f"{k} {v}" for k, v in sorted(st.exceptions.items())))
    if st.exits:
        t.add_row("exits", ", ".join(f"{k} {v:,}" for k, v in sorted(st.exits.items())))
    if st.unknown_ports:
        t.add_row("unknown ports", ", ".join(f"{k} ×{v}" for k, v in sorted(st.unknown_ports.items())))
    if st.hypercalls:
        t.add_row("hypercalls", ", ".join(f"{k} {v:,}" for k, v in sorted(st.hypercalls.items())))
    rate = st.instructions / st.wall_s / 1e6 if st.wall_s else 0
    t.add_row("wall time", f"{st.wall_s:.3f} s ({rate:.1f} M instructions/s)")
    err.print(t)


def command(args) -> int:
    from backends.pc.machine import Limits
    from backends.run import run

    stream = None if args.json else (lambda b: (sys.stdout.buffer.write(bytes([b])), sys.stdout.buffer.flush()))
    obs = run(args.kernel, args.backend, limits=Limits(max_insns=args.max_insns, timeout=args.timeout),
              memory_mb=args.memory, cmdline=args.cmdline, digests=args.digest, on_serial=stream).observation  # fmt: skip
    if args.json:
        print_json({"kernel": args.kernel, **obs.to_json()})
    else:
        _print_run_summary(obs, args.kernel)
    return obs.ending.status
