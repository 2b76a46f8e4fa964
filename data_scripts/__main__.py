"""Command line of ``data_scripts``: ``python -m data_scripts {list,fetch,verify,convert} ...``.

``convert NAME`` takes that converter's options as flags (``--size 64``, list options
comma-separated: ``--categories bird,cat``); ``convert NAME --help`` lists them. Exit status: 0 on
success, 1 on a failed verification or a handled error (message on stderr), 2 on bad usage.
"""
from __future__ import annotations

import argparse
import sys

from . import CONVERTERS, convert_dataset
from .common import downloads_dir, raw_dir
from .fetch import ArchiveError, ChecksumError, DownloadError, UnsafeArchiveError, fetch, fetched, verify
from .registry import REGISTRY


def _list(root) -> int:
    from xnn_support.data.real import available_conversions, default_root

    print(f"data root: {default_root(root)}")
    for name, ds in REGISTRY.items():
        have = [r.filename for r in ds.resources if (downloads_dir(name, root) / r.filename).is_file()]
        state = ("converted" if available_conversions(name, root) else
                 "fetched" if fetched(name, root) else
                 "raw, unverified" if raw_dir(name, root).is_dir() and any(raw_dir(name, root).iterdir()) else
                 f"downloaded {len(have)}/{len(ds.resources)}" if have else "missing")
        size = " + ".join(r.size_note for r in ds.resources if r.size_note)
        print(f"{name:15s} {state:14s} {size:20s} {ds.title}")
        print(f"{'':15s} license: {ds.license}")
        for m in available_conversions(name, root):
            print(f"{'':15s} conversion: " + ", ".join(f"{k}={v}" for k, v in m["options"].items()))
    return 0


def _convert_parser(name: str) -> argparse.ArgumentParser:
    mod, _ = CONVERTERS[name]
    p = argparse.ArgumentParser(prog=f"python -m data_scripts convert {name}",
                                description=(mod.__doc__ or "").split("\n")[0])
    for o in mod.OPTIONS:
        default = ",".join(o.default) if o.is_list else o.default
        hint = f" (choices: {', '.join(map(str, o.choices))})" if o.choices else ""
        p.add_argument("--" + o.name.replace("_", "-"), dest=o.name, default=None,
                       type=str if o.is_list else o.type,
                       help=f"{o.help}; default {default}{hint}")
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m data_scripts",
                                 description="Fetch, verify and convert the real datasets.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd, helptext in (("list", "datasets and their state"),
                          ("fetch", "download, verify and extract"),
                          ("verify", "recompute the checksums of the downloads"),
                          ("convert", "convert to the xnn in-memory format (.pt + .json)")):
        sp = sub.add_parser(cmd, help=helptext, add_help=cmd != "convert")
        if cmd != "list":
            sp.add_argument("name", choices=sorted(REGISTRY))
        sp.add_argument("--root", default=None, help="data root (default $XNN_DATA or "
                                                     "~/.cache/xnn/data)")
        if cmd == "fetch":
            sp.add_argument("--force", action="store_true", help="download again")
        if cmd == "convert":
            sp.add_argument("-h", "--help", action="store_true")
    args, rest = ap.parse_known_args(argv)
    if rest and args.cmd != "convert":
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.cmd == "list":
            return _list(args.root)
        if args.cmd == "fetch":
            fetch(args.name, args.root, force=args.force)
            return 0
        if args.cmd == "verify":
            return 0 if verify(args.name, args.root) else 1
        cp = _convert_parser(args.name)
        if args.help:
            cp.print_help()
            return 0
        opts = {k: v for k, v in vars(cp.parse_args(rest)).items() if v is not None}
        path = convert_dataset(args.name, args.root, **opts)
        print(f"wrote {path} (+ .pt). Load with: "
              f"xnn_support.data.real.load_real({args.name!r}, split=..., ...)")
        return 0
    except (FileNotFoundError, ValueError, DownloadError, ChecksumError, ArchiveError,
            UnsafeArchiveError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
