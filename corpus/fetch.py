"""Download the real third-party objects Afterburn is proven on.

Debian 12 (bookworm) i386 packages, fetched with apt into a cache *outside
the repository* and unpacked with ``dpkg-deb -x``.  Nothing here is ever
committed; tests and benchmarks call :func:`ensure` and get paths.

* ``linux-image-686:i386``, resolved through the metapackage to the current
  versioned image (old ABIs vanish at point releases): ~4,100 ``.ko``
  modules and the ``vmlinuz`` that loads them;
* ``grub-pc-bin`` (the i386-pc ``.mod`` files), ``grub-pc-dbg`` (the same
  modules with full symbols) and ``grub-common`` (``grub-mkimage``);
* ``busybox-static:i386``, the userland of the module-loading initramfs.

apt runs with a private state and cache directory and its own sources
list, so the host's apt configuration is untouched and no
``dpkg --add-architecture`` is needed.  The security suite is restricted to
amd64, because its i386 index has been seen failing with a size mismatch
(research/corpus.md), which would otherwise fail the whole update.

    python -m corpus.fetch [--cache DIR] [--json]

The cache defaults to ``$AFTERBURN_CORPUS`` or ``~/.cache/afterburn/debian``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PACKAGES = ["grub-pc-bin", "grub-pc-dbg", "grub-common", "busybox-static:i386"]
LINUX_META = "linux-image-686:i386"
MANIFEST = "manifest.json"


class FetchError(Exception):
    """The corpus could not be fetched; the message says why in one line."""


@dataclass
class Corpus:
    root: str
    linux_version: str  # e.g. 6.1.0-50-686
    linux_package: str
    modules: str  # .../lib/modules/<version>/kernel
    vmlinuz: str
    grub_modules: str  # .../usr/lib/grub/i386-pc
    grub_debug_modules: str  # grub-pc-dbg: the same modules as *.module, with full symbols and DWARF
    grub_mkimage: str
    busybox: str
    packages: dict[str, str]  # package -> version

    def ko_files(self) -> list[Path]:
        return sorted(Path(self.modules).rglob("*.ko"))

    def grub_mod_files(self) -> list[Path]:
        return sorted(Path(self.grub_modules).glob("*.mod"))


def default_cache() -> Path:
    env = os.environ.get("AFTERBURN_CORPUS")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "afterburn" / "debian"


def _apt_options(cache: Path) -> list[str]:
    apt = cache / "apt"
    return [
        "-o", f"Dir::State={apt / 'state'}",
        "-o", f"Dir::State::status={apt / 'status'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
        "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o", "APT::Architecture=amd64",
        "-o", "APT::Architectures::=amd64",
        "-o", "APT::Architectures::=i386",
        "-o", "Debug::NoLocking=1",  # private state: no lock to share with the host's apt
        "-o", "Acquire::Retries=3",
        *(["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []),  # _apt cannot write our cache
    ]  # fmt: skip


def _prepare_apt(cache: Path) -> None:
    apt = cache / "apt"
    for d in ("state/lists/partial", "cache/archives/partial", "sources.list.d"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").touch()
    key = f" signed-by={KEYRING}" if Path(KEYRING).exists() else ""
    (apt / "sources.list").write_text(
        f"deb [arch=amd64,i386{key}] {MIRROR} bookworm main\n"
        f"deb [arch=amd64,i386{key}] {MIRROR} bookworm-updates main\n"
        f"deb [arch=amd64{key}] {SECURITY} bookworm-security main\n"
    )


def _run(args: list[str], cwd: Path | None = None, what: str = "") -> str:
    try:
        r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise FetchError(f"{args[0]} is not installed (needed to {what or 'fetch the corpus'})") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{' '.join(args[:2])} timed out") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "dpkg-deb:"))] or lines[-1:]
        raise FetchError(f"{what or args[0]} failed: {errors[0] if errors else 'exit ' + str(r.returncode)}")
    return r.stdout


def _resolve_linux(cache: Path) -> str:
    out = _run(["apt-cache", *_apt_options(cache), "depends", LINUX_META], what="resolving linux-image-686")
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends: linux-image-") and line.endswith(":i386"):
            return line.split()[1]
    raise FetchError(f"{LINUX_META} names no linux-image-*:i386 dependency")


def _extract(deb: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(tmp)], what=f"unpacking {deb.name}")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def _version(deb: Path) -> str:
    return _run(["dpkg-deb", "-f", str(deb), "Version"], what=f"reading {deb.name}").strip()


def fetch(cache: Path) -> Corpus:
    """Download and unpack everything (again); write the manifest last."""
    cache.mkdir(parents=True, exist_ok=True)
    _prepare_apt(cache)
    _run(["apt-get", *_apt_options(cache), "-q", "update"], what="apt-get update")
    linux = _resolve_linux(cache)
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    wanted = [linux, *PACKAGES]
    _run(["apt-get", *_apt_options(cache), "-q", "download", *wanted], cwd=debs, what="apt-get download")
    found: dict[str, Path] = {}
    for name in wanted:
        base = name.split(":")[0]
        arch = "i386" if name.endswith(":i386") else None
        matches = sorted(p for p in debs.glob(f"{base}_*.deb") if arch is None or p.name.endswith(f"_{arch}.deb"))
        if not matches:
            raise FetchError(f"apt-get download produced no .deb for {name}")
        found[name] = matches[-1]
    x = cache / "x"
    x.mkdir(exist_ok=True)
    for name, deb in found.items():
        _extract(deb, x / name.split(":")[0])
    version = linux.split(":")[0].removeprefix("linux-image-")
    kroot = x / linux.split(":")[0]
    corpus = Corpus(
        root=str(cache),
        linux_version=version,
        linux_package=linux,
        modules=str(kroot / "lib" / "modules" / version / "kernel"),
        vmlinuz=str(kroot / "boot" / f"vmlinuz-{version}"),
        grub_modules=str(x / "grub-pc-bin" / "usr" / "lib" / "grub" / "i386-pc"),
        grub_debug_modules=str(x / "grub-pc-dbg" / "usr" / "lib" / "grub" / "i386-pc"),
        grub_mkimage=str(x / "grub-common" / "usr" / "bin" / "grub-mkimage"),
        busybox=str(x / "busybox-static" / "bin" / "busybox"),
        packages={name: _version(deb) for name, deb in found.items()},
    )
    _check(corpus)
    (cache / MANIFEST).write_text(json.dumps(asdict(corpus), indent=2) + "\n")
    return corpus


def _check(c: Corpus) -> None:
    for label, path in (("modules", c.modules), ("vmlinuz", c.vmlinuz), ("GRUB modules", c.grub_modules),
                        ("grub-mkimage", c.grub_mkimage), ("busybox", c.busybox)):  # fmt: skip
        if not Path(path).exists():
            raise FetchError(f"the corpus has no {label} at {path}")


def load(cache: Path | None = None) -> Corpus | None:
    """The corpus already in the cache, or None."""
    cache = cache or default_cache()
    try:
        data = json.loads((cache / MANIFEST).read_text())
        corpus = Corpus(**data)
        _check(corpus)
        return corpus
    except (OSError, ValueError, TypeError, FetchError):
        return None


def ensure(cache: Path | None = None) -> Corpus:
    """The corpus, fetched first if it is not in the cache."""
    cache = cache or default_cache()
    return load(cache) or fetch(cache)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m corpus.fetch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache directory (default: $AFTERBURN_CORPUS or "
                                                              "~/.cache/afterburn/debian)")  # fmt: skip
    ap.add_argument("--refresh", action="store_true", help="download again even if the cache is complete")
    ap.add_argument("--json", action="store_true", help="print the manifest as JSON")
    args = ap.parse_args(argv)
    cache = args.cache or default_cache()
    try:
        corpus = fetch(cache) if args.refresh else ensure(cache)
    except FetchError as e:
        print(f"corpus.fetch: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(corpus), indent=2))
    else:
        print(f"corpus in {corpus.root}: {corpus.linux_package} ({len(corpus.ko_files())} modules), "
              f"{len(corpus.grub_mod_files())} GRUB i386-pc modules")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
