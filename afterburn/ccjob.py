"""The part of an ``afterburn cc`` compile that needs the annotator: annotate
one assembler text and assemble it.  It runs in the build's one server
(``ccserver``) or, when there is none, in the compiling process (``cc``);
neither imports the other for it."""
from __future__ import annotations

from .errors import AfterburnError


class Assembler:
    """Assembles annotated text with the same driver and flags as the
    compile, into a private directory.  ``None`` means the flags made the
    assembler produce nothing (``-Wa,--version``): gcc's own call produces
    nothing either.  Only the final assembly's messages reach the user
    (``echo``, kept in ``printed``): a check assembly is ours, and
    ``gcc -S`` runs no assembler."""

    def __init__(self, gcc: list[str], flags: list[str], tmp, echo: bool = False) -> None:
        self.gcc, self.flags, self.tmp, self.echo = gcc, flags, tmp, echo
        self.count = 0
        self.printed = ["", ""]  # stdout, stderr

    def __call__(self, text: str) -> bytes | None:
        self.count += 1
        import subprocess

        tag = f"{'final' if self.echo else 'check'}-{self.count}"
        s, o = self.tmp / f"{tag}.s", self.tmp / f"{tag}.o"
        s.write_text(text)
        r = subprocess.run(self.gcc + self.flags + ["-c", "-x", "assembler", str(s), "-o", str(o)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode != 0:
            first = next((ln for ln in r.stderr.splitlines() if "rror" in ln), r.stderr.strip())
            raise AfterburnError(f"afterburn cc: annotated assembler does not assemble: {first}")
        if self.echo:  # what the final assembly prints is the user's
            self.printed[0] += r.stdout
            self.printed[1] += r.stderr
        try:
            return o.read_bytes()
        except FileNotFoundError:
            return None


def annotate_job(req: dict) -> dict:
    """Annotate one text file and assemble it: the part of a compile that
    needs the annotator.  Runs in the build's one server (ccserver) or, if
    that cannot be had, in this process.  Reads ``req["text"]`` and writes
    ``req["result"]`` (the object, or the text for -S); answers with what
    to print and whether anything was written."""
    from pathlib import Path

    from . import annotate_asm

    text = Path(req["text"]).read_text()
    tmp = Path(req["tmp"])
    assemble = Assembler(req["gcc"], req["flags"], tmp)
    if req["mode"] == "S":
        res = annotate_asm.annotate_text(text, name=req["name"], assemble=assemble)
        Path(req["result"]).write_text(res.text)
        return {"written": True, "warnings": res.warnings, "stdout": "", "stderr": ""}
    final = Assembler(req["gcc"], req["flags"], tmp, echo=True)
    obj = annotate_asm.annotate_to_object(text, name=req["name"], assemble=assemble, final=final)
    if obj.data is not None:  # None: the flags asked the assembler for something else (-Wa,--version)
        Path(req["result"]).write_bytes(obj.data)
    return {"written": obj.data is not None, "warnings": obj.warnings, "stdout": final.printed[0],
            "stderr": final.printed[1], "passes": obj.passes}  # fmt: skip
