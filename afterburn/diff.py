"""``afterburn diff``: one image, every backend, one verdict.

Each backend runs the same kernel from a fresh machine; the Observations are
compared with :func:`backends.pc.observation.compare` (timing never counts),
each against the first backend's, which is the reference (the native one
unless the user orders otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from backends.pc.observation import Divergence, Observation, compare


@dataclass
class BackendRun:
    backend: str
    observation: Observation
    divergence: Divergence | None  # against the reference; None when it agrees (or is the reference)


@dataclass
class DiffResult:
    kernel: str
    runs: list[BackendRun] = field(default_factory=list)

    @property
    def reference(self) -> BackendRun:
        return self.runs[0]

    @property
    def agree(self) -> bool:
        return all(r.divergence is None for r in self.runs)

    @property
    def first_divergence(self) -> BackendRun | None:
        return next((r for r in self.runs if r.divergence is not None), None)

    def to_json(self, trace_limit: int = 64) -> dict:
        return {
            "kernel": self.kernel,
            "agree": self.agree,
            "reference": self.reference.backend,
            "backends": [{
                "backend": r.backend,
                "agrees": r.divergence is None,
                "divergence": None if r.divergence is None else {"field": r.divergence.field,
                                                                 "detail": r.divergence.detail},
                "observation": r.observation.to_json(trace_limit=trace_limit),
            } for r in self.runs],
        }  # fmt: skip


def run_backends(kernel: str, backends: list[str], limits, cmdline: str | None = None) -> DiffResult:
    """Run ``kernel`` on each backend (the first is the reference)."""
    from backends.run import run

    result = DiffResult(kernel)
    for name in backends:
        obs = run(kernel, name, limits=limits, cmdline=cmdline).observation
        div = None if not result.runs else compare(result.reference.observation, obs)
        result.runs.append(BackendRun(name, obs, div))
    return result


def format_counts(counter, limit: int = 5) -> str:
    """One "kind count" per line, the most frequent first."""
    items = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [f"{k} {v:,}" for k, v in items[:limit]]
    if len(items) > limit:
        lines.append(f"+{len(items) - limit} more: {sum(v for _, v in items[limit:]):,}")
    return "\n".join(lines) or "-"


def short_result(obs: Observation) -> str:
    e = obs.ending
    return f"exit {e.code:#x}" if e.reason == "exit" else e.reason


def render(result: DiffResult, console: Console, title: str | None = None) -> None:
    """The per-backend table, then the first divergence in detail."""
    t = Table(title=title or f"{result.kernel}: {'all backends agree' if result.agree else 'backends DIFFER'}",
              title_justify="left")  # fmt: skip
    for col in ("backend", "result", "agrees", "instructions", "wall", "exits", "hypercalls"):
        t.add_column(col, justify="right" if col in ("instructions", "wall") else "left", no_wrap=True)
    for r in result.runs:
        st = r.observation.stats
        agrees = ("reference" if r is result.reference else "[green]yes[/green]" if r.divergence is None
                  else f"[red]no: {r.divergence.field}[/red]")  # fmt: skip
        t.add_row(r.backend, short_result(r.observation), agrees, f"{st.instructions:,}", f"{st.wall_s:.2f} s",
                  format_counts(st.exits), format_counts(st.hypercalls))  # fmt: skip
    console.print(t)
    bad = result.first_divergence
    if bad is not None:
        ref = result.reference
        console.print(f"[bold]first divergence[/bold]: {bad.backend} vs {ref.backend} ({bad.divergence.field})")
        console.print(f"  {bad.divergence.detail}")
        for r in (ref, bad):
            if r.observation.ending.detail:
                console.print(f"  {r.backend} ended: {r.observation.ending.describe()}")
        for line in explain(ref.observation, bad.observation, bad.divergence):
            console.print(f"  {line}")


def explain(a: Observation, b: Observation, div: Divergence) -> list[str]:
    """More context for a divergence: where in the output, which port writes,
    every differing register."""
    if div.field == "serial":
        la = a.serial.decode("latin-1").splitlines()
        lb = b.serial.decode("latin-1").splitlines()
        i = next((i for i, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y), min(len(la), len(lb)))
        return [f"line {i + 1}: {la[i] if i < len(la) else '<end of output>'!r}",
                f"   vs    {lb[i] if i < len(lb) else '<end of output>'!r}"]  # fmt: skip
    if div.field == "io_trace":
        i = next((i for i, (x, y) in enumerate(zip(a.io_trace, b.io_trace, strict=False)) if x != y),
                 min(len(a.io_trace), len(b.io_trace)))  # fmt: skip
        lines = [f"port writes {max(0, i - 3)}..{i + 3} (port, size, value):"]
        for j in range(max(0, i - 3), i + 4):
            x = a.io_trace[j] if j < len(a.io_trace) else None
            y = b.io_trace[j] if j < len(b.io_trace) else None
            if x is None and y is None:
                break
            mark = "  " if x == y else "≠ "
            lines.append(f"{mark}#{j}: {_io(x)}  |  {_io(y)}")
        return lines
    if div.field == "cpu":
        return [f"{k}: {_hex(a.cpu.get(k))} vs {_hex(b.cpu.get(k))}" for k in sorted(set(a.cpu) | set(b.cpu))
                if a.cpu.get(k) != b.cpu.get(k)]  # fmt: skip
    return []


def _io(t) -> str:
    return "-" if t is None else f"({t[0]:#x}, {t[1]}, {t[2]:#x})"


def _hex(v) -> str:
    return f"{v:#x}" if isinstance(v, int) else str(v)
