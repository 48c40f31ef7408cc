"""What a user could see of a run, and how two runs are compared.

An :class:`Observation` holds the serial bytes, how the run ended, the
ordered port-write trace, the final (virtual) CPU state and digests of chosen
guest memory.  Timing is kept apart in :class:`Stats`: instruction counts,
interrupts, exits and wall time differ between backends by design, so
:func:`compare` never looks at them.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

# `afterburn run` exit statuses for endings other than isa-debug-exit.
EXIT_STATUS = {
    "escape": 248,  # a sensitive instruction the rewriter missed reached the hypervisor
    "killed": 249,  # the hypervisor killed the guest (invalid hypercall, a frame it does not own)
    "halted": 250,  # hlt with interrupts disabled, or with no interrupt source left
    "fault": 251,  # triple fault, or an exception the backend could not deliver
    "timeout": 252,  # --timeout (wall clock) ran out
    "max-insns": 253,  # --max-insns ran out
    "error": 254,  # the machine could not go on (unmapped memory, unsupported feature, escape)
}


@dataclass
class Ending:
    reason: str  # "exit" (isa-debug-exit) or a key of EXIT_STATUS
    code: int | None = None  # the value written to isa-debug-exit
    detail: str = ""

    @property
    def status(self) -> int:
        """The process exit status `afterburn run` uses."""
        if self.reason == "exit":
            return (self.code or 0) & 0xFF
        return EXIT_STATUS[self.reason]

    def describe(self) -> str:
        if self.reason == "exit":
            return f"isa-debug-exit {self.code:#x}"
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclass
class Stats:
    """Timing-dependent counters: reported, never compared."""

    instructions: int = 0
    slices: int = 0
    interrupts: int = 0  # external interrupts delivered
    exceptions: Counter = field(default_factory=Counter)  # by vector name
    exits: Counter = field(default_factory=Counter)  # transitions to the host (Python), by kind
    hypercalls: Counter = field(default_factory=Counter)  # by name
    unknown_ports: Counter = field(default_factory=Counter)  # "in 0x92" -> accesses nobody answered
    halts: int = 0
    idle_ns: int = 0
    virtual_ns: int = 0
    wall_s: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        for k in ("exceptions", "exits", "hypercalls", "unknown_ports"):
            d[k] = dict(sorted(getattr(self, k).items()))
        return d


@dataclass
class Observation:
    backend: str
    serial: bytes
    ending: Ending
    io_trace: list[tuple[int, int, int]]
    cpu: dict[str, int]
    memory: dict[str, str]  # name -> sha256 of guest memory
    stats: Stats

    def to_json(self, trace_limit: int | None = None) -> dict:
        trace = self.io_trace if trace_limit is None else self.io_trace[:trace_limit]
        return {
            "backend": self.backend,
            "serial": self.serial.decode("latin-1"),
            "ending": {"reason": self.ending.reason, "code": self.ending.code, "detail": self.ending.detail,
                       "status": self.ending.status},  # fmt: skip
            "io_trace": [list(t) for t in trace],
            "io_trace_length": len(self.io_trace),
            "cpu": self.cpu,
            "memory": self.memory,
            "stats": self.stats.to_json(),
        }


@dataclass(frozen=True)
class Divergence:
    field: str
    detail: str


def compare(a: Observation, b: Observation) -> Divergence | None:
    """The first difference a user could see between two runs, if any."""
    if a.serial != b.serial:
        i = next((i for i, (x, y) in enumerate(zip(a.serial, b.serial, strict=False)) if x != y),
                 min(len(a.serial), len(b.serial)))  # fmt: skip
        return Divergence("serial", f"serial output differs at byte {i}: {a.serial[i:i + 40]!r} vs {b.serial[i:i + 40]!r}")
    if (a.ending.reason, a.ending.code) != (b.ending.reason, b.ending.code):
        return Divergence("ending", f"{a.ending.describe()} vs {b.ending.describe()}")
    if a.io_trace != b.io_trace:
        i = next((i for i, (x, y) in enumerate(zip(a.io_trace, b.io_trace, strict=False)) if x != y),
                 min(len(a.io_trace), len(b.io_trace)))  # fmt: skip
        x = a.io_trace[i] if i < len(a.io_trace) else None
        y = b.io_trace[i] if i < len(b.io_trace) else None
        fmt = lambda t: "end of trace" if t is None else f"out port {t[0]:#x} size {t[1]} value {t[2]:#x}"  # noqa: E731
        return Divergence("io_trace", f"port write #{i}: {fmt(x)} vs {fmt(y)}")
    for k in sorted(set(a.cpu) | set(b.cpu)):
        if a.cpu.get(k) != b.cpu.get(k):
            return Divergence("cpu", f"final {k}: {_hex(a.cpu.get(k))} vs {_hex(b.cpu.get(k))}")
    for k in sorted(set(a.memory) | set(b.memory)):
        if a.memory.get(k) != b.memory.get(k):
            return Divergence("memory", f"memory {k}: digest {a.memory.get(k)} vs {b.memory.get(k)}")
    return None


def _hex(v) -> str:
    return f"{v:#x}" if isinstance(v, int) else str(v)
