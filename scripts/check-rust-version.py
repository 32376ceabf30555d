#!/usr/bin/env python3
"""The workspace's rust-version is the oldest Rust that builds sluice: no lower than
any dependency's own rust-version (read from `cargo metadata`), and no higher than it
needs to be. Our own code is held to it by clippy's `incompatible_msrv` lint (it
flags a standard library item newer than rust-version), which CI runs with -D warnings."""

import json
import subprocess
import sys


def version(text):
    return tuple(int(part) for part in text.split(".")[:3]) + (0,) * (3 - len(text.split(".")))


def main():
    metadata = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1"]))
    members = set(metadata["workspace_members"])
    ours = {p["rust_version"] for p in metadata["packages"] if p["id"] in members}
    if len(ours) != 1 or None in ours:
        print(f"every workspace crate should take rust-version from the workspace: {ours}")
        return 1
    declared = ours.pop()
    # Dependencies that are built (normal and build kinds, for this platform).
    needed = max(
        ((version(p["rust_version"]), p["name"], p["rust_version"]) for p in metadata["packages"]
         if p["id"] not in members and p.get("rust_version")),
        default=((0, 0, 0), "-", "0"),
    )
    if version(declared) < needed[0]:
        print(f"rust-version {declared} is below {needed[2]}, which {needed[1]} needs: raise it in Cargo.toml")
        return 1
    print(f"rust-version {declared}: the newest a dependency needs is {needed[2]} ({needed[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
