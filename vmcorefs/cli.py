"""``vmcorefs [options] DUMP [DUMP-PART...] MOUNTPOINT`` (or ``DIR MOUNTPOINT``): check
everything, then mount.

Every input error is found before mounting and reported as one line ``vmcorefs: PATH: reason``
with exit status 1 (usage errors: 2). No traceback reaches the user unless ``--debug``.
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import re
import sys

from . import __version__
from .errors import DumpError, MountPointError, OptionError, PathError, VmcorefsError

PROG = "vmcorefs"
#: The usage lines of the manual page's SYNOPSIS (``--help`` prints the same).
USAGE = """\
vmcorefs [-f] [-o OPT[,OPT...]] [--zero-fill] [--cache-size MIB] [--vmlinux FILE]
                [--system-map FILE] [--debug] DUMP [DUMP-PART...] MOUNTPOINT
       vmcorefs [options] [--max-open N] DIR MOUNTPOINT
       vmcorefs --version | --help"""
_OCTAL_ESCAPE = re.compile(rb"\\([0-7]{3})")
#: ``-o`` options that would make the mount writable: refused, it is always read-only.
WRITABLE_OPTIONS = frozenset({"rw"})


#: Control characters (C0, DEL, C1), and the surrogates that stand for a path's bytes that are
#: not UTF-8 (``os.fsdecode``): written ``\xNN`` in a message, which then stays one line that a
#: terminal shows as it is (a path may hold a newline or an escape sequence).
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))} | {
    0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)
}


def one_line(text: str) -> str:
    """``text`` with its control characters and undecodable bytes written ``\\xNN``."""
    return text.translate(_UNPRINTABLE)


def say(text: str) -> None:
    """One line on stderr: ``vmcorefs: TEXT``, escaped (:func:`one_line`)."""
    print(f"{PROG}: {one_line(text)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: {one_line(message)} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        usage=USAGE,
        description="Mount a Linux kernel crash dump (ELF, kdump-compressed, flattened or split) "
        "as a read-only filesystem. See vmcorefs(1).",
        epilog="Unmount with: fusermount3 -u MOUNTPOINT. Manual: man vmcorefs.",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="DUMP [DUMP-PART...] MOUNTPOINT",
        help="the dump (every part of a split dump, in any order), or a folder of dumps "
        "(such as /var/crash: every dump under it, and an index), then the mount point (an "
        "existing directory)",
    )
    p.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="stay in the foreground (default: return once mounted)",
    )
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="FUSE mount options, e.g. allow_other (the mount is always read-only)",
    )
    p.add_argument(
        "--zero-fill",
        action="store_true",
        help="read absent physical memory as zeros instead of failing with EIO",
    )
    p.add_argument(
        "--cache-size",
        type=int,
        default=64,
        metavar="MIB",
        help="size of the caches of pages and translations in MiB (default 64)",
    )
    p.add_argument(
        "--vmlinux",
        metavar="FILE",
        help="take symbols (with sizes) from this vmlinux; must match the dump",
    )
    p.add_argument(
        "--system-map",
        metavar="FILE",
        help="take symbols from this System.map; must match the dump",
    )
    p.add_argument(
        "--max-open",
        type=int,
        default=8,
        metavar="N",
        help="with a folder of dumps: keep at most N dumps open at once (default 8)",
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="log every FUSE call, one line per failed read (why), tracebacks (implies -f)",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse_fuse_options(values: list[str]) -> dict[str, str | bool]:
    out: dict[str, str | bool] = {}
    for value in values:
        for item in value.split(","):
            if not item:
                continue
            key, sep, val = item.partition("=")
            out[key] = val if sep else True
    return out


def mount_points(mountinfo: bytes | None = None) -> list[str]:
    """Every mount point ``/proc/self/mountinfo`` (or the text given) lists: its 5th field,
    with the kernel's octal escapes of space, tab, newline and backslash undone."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", "rb") as f:
                mountinfo = f.read()
        except OSError:
            return []
    unescape = functools.partial(_OCTAL_ESCAPE.sub, lambda m: bytes([int(m[1], 8) & 0xFF]))
    fields = (line.split() for line in mountinfo.splitlines())
    return [os.fsdecode(unescape(f[4])) for f in fields if len(f) > 4]


def mounted_fuse_at(path: str | os.PathLike[str]) -> bool:
    """Whether something is mounted at ``path`` (tests and benchmarks ask this too)."""
    return os.path.realpath(path) in mount_points()


def check_mountpoint(path: str) -> None:
    """MountPointError unless ``path`` is an existing directory with nothing mounted on it."""
    fix = f"unmount it first: fusermount3 -u {path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountPointError(path, "mount point does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise MountPointError(
                path, f"a vmcorefs that died is still mounted here; {fix}"
            ) from None
        raise MountPointError(path, f"mount point: {exc.strerror}") from None
    import stat as _stat

    if not _stat.S_ISDIR(st.st_mode):
        raise MountPointError(path, "mount point is not a directory")
    if mounted_fuse_at(path):
        raise MountPointError(path, f"already mounted; {fix}")


def check_fuse_options(options: dict[str, str | bool]) -> None:
    """Refuse, before anything is opened, what would make the mount writable, and a
    ``max_read`` that the FUSE adapter cannot honour."""
    for key in options:
        if key in WRITABLE_OPTIONS:
            raise OptionError(key, "the mount is always read-only")
    if "max_read" in options:
        from .fuse import read_size  # loads libfuse: only when the option is given

        read_size(options)


def run(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.paths) < 2:
        parser.error("need a dump and a mount point")
    if args.cache_size < 1:
        parser.error("--cache-size must be at least 1 (MiB)")
    *dumps, mountpoint = args.paths
    options = parse_fuse_options(args.options)
    check_fuse_options(options)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="vmcorefs: %(message)s"
    )
    # mfusepy logs every callback it sets up and a traceback for every errno at debug level:
    # noise beside our one line per failed read (fuse.errno_of).
    logging.getLogger("fuse").setLevel(logging.WARNING)

    check_mountpoint(mountpoint)
    if len(dumps) == 1 and os.path.isdir(dumps[0]):
        return run_folder(parser, args, dumps[0], mountpoint, options)
    # Missing, unreadable or directory dumps are reported before anything heavy is imported.
    from .dumpfile.source import DumpFile

    for path in dumps:
        DumpFile(path).close()

    from .kernel.dump import open_dump  # imports the layers below; FUSE only once needed

    dump = open_dump(
        dumps,
        zero_fill=args.zero_fill,
        cache_size_mib=args.cache_size,
        vmlinux=args.vmlinux,
        system_map=args.system_map,
    )
    # A file shorter than its headers say still mounts (what it holds is exact), with a word.
    for cut in dump.source.truncations():
        say(f"{cut.path}: warning: {cut.warning()}")
    dump.warm()
    from .fuse import mount
    from .tree import build_tree

    try:
        mtime = int(os.stat(dumps[0]).st_mtime_ns)
    except OSError:
        mtime = None
    mount(
        build_tree(dump),
        mountpoint,
        foreground=args.foreground,
        debug=args.debug,
        options=options,
        mtime_ns=mtime,
    )
    return 0


#: How long the kernel may remember a name a folder mount does not have: dumps come and go.
FOLDER_NEGATIVE_TIMEOUT = 1.0


def run_folder(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    folder: str,
    mountpoint: str,
    options: dict[str, str | bool],
) -> int:
    """``vmcorefs DIR MOUNTPOINT``: every dump under DIR, each as ``MOUNTPOINT/NAME/``, and
    ``MOUNTPOINT/index`` (``vmcorefs/folder/``). Files are probed (headers only) before
    mounting; no dump is opened."""
    if args.vmlinux or args.system_map:
        parser.error("--vmlinux and --system-map apply to one dump, not to a folder of dumps")
    if args.max_open < 1:
        parser.error("--max-open must be at least 1")
    real_folder = os.path.realpath(folder)
    real_mountpoint = os.path.realpath(mountpoint)
    if real_mountpoint == real_folder:
        raise MountPointError(
            mountpoint, "the mount point is the folder of dumps itself: mount elsewhere"
        )
    try:
        with os.scandir(folder):
            pass
        mtime: int | None = int(os.stat(folder).st_mtime_ns)
    except OSError as exc:
        raise DumpError(folder, f"cannot read the folder: {exc.strerror}") from None
    from .folder import build_folder_tree
    from .fuse import mount

    tree = build_folder_tree(
        real_folder,
        max_open=args.max_open,
        skip=(real_mountpoint,),
        dump_options={"zero_fill": args.zero_fill, "cache_size_mib": args.cache_size},
    )
    # Found now, headers only (no dump is opened): a folder without a dump is an input error
    # like any other, and the daemon starts with the names of this scan.
    tree.refresh()
    if not tree.slots():
        raise DumpError(folder, "no crash dump in this folder or its subfolders")
    try:
        mount(
            tree,
            mountpoint,
            foreground=args.foreground,
            debug=args.debug,
            options=options,
            mtime_ns=mtime,
            negative_timeout=FOLDER_NEGATIVE_TIMEOUT,
        )
    finally:
        tree.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return run(argv)
    except OptionError as exc:  # a wrong option: a usage error
        say(str(exc))
        return 2
    except PathError as exc:
        if debug:
            raise
        say(f"{exc.path}: {exc.reason}")
        return 1
    except VmcorefsError as exc:
        if debug:
            raise
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        if debug:
            raise
        say(
            f"cannot load {exc.name or 'a module'}: {exc} "
            "(is vmcorefs installed with its dependencies?)"
        )
        return 1
    except OSError as exc:
        if debug:
            raise
        where = exc.filename or "error"
        say(f"{where}: {exc.strerror or exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
