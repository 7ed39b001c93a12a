"""The first program of the proof's namespaces: hide the real homes, bring loopback up, exec.

Run by path with ``python -I -S`` inside ``unshare -m -n`` (or ``unshare -r -m -n``), so it
needs nothing but the standard library and imports nothing of the user's::

    python -I -S _sandbox.py [--hide DIR]... [--uid N --gid N] [--ready FILE] -- CMD [ARGS...]

* ``--hide DIR``: an empty tmpfs is mounted over DIR (the real PaddleNLP home, the hub caches),
  so a program that sets its own ``PPNLP_HOME`` or reads ``~/.paddlenlp`` directly finds
  nothing there, as on the offline machine. The mount namespace is private (``unshare -m``
  makes it so): nothing is seen outside, and it vanishes with the command.
* the loopback interface, down in a fresh network namespace, is brought up: a program that
  talks to its own server on 127.0.0.1 works, as it does offline.
* ``--uid N --gid N`` (under ``unshare -r``, where the command would run as uid 0): one more
  user namespace maps the caller back to uid N / gid N before the command starts.

* ``--ready FILE``: created once everything is set up, right before the command starts: a
  run without it never reached the command (the caller tells set-up failures from the
  command's own exit codes by it, whatever the code).

Any failure is one line on stderr and exit code 125 (the command did not run).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import socket
import struct
import sys

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_CLONE_NEWUSER = 0x10000000
EXIT_SETUP = 125


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        if not flags & _IFF_UP:
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def hide(folder: str) -> None:
    libc = _libc()
    if libc.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                  b"size=64m,mode=0755") != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), folder)


def map_user(uid: int, gid: int) -> None:
    libc = _libc()
    if libc.unshare(_CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWUSER): {os.strerror(err)}")
    with open("/proc/self/setgroups", "w") as fh:
        fh.write("deny")
    with open("/proc/self/uid_map", "w") as fh:
        fh.write(f"{uid} 0 1")
    with open("/proc/self/gid_map", "w") as fh:
        fh.write(f"{gid} 0 1")


def main(argv: list[str]) -> int:
    hidden: list[str] = []
    uid = gid = None
    ready = None
    while argv and argv[0] != "--":
        opt = argv.pop(0)
        if opt == "--hide" and argv:
            hidden.append(argv.pop(0))
        elif opt == "--ready" and argv:
            ready = argv.pop(0)
        elif opt in ("--uid", "--gid") and argv:
            value = int(argv.pop(0))
            uid, gid = (value, gid) if opt == "--uid" else (uid, value)
        else:
            print(f"paddle-bundle proof: bad sandbox argument {opt!r}", file=sys.stderr)
            return EXIT_SETUP
    command = argv[1:]
    if not command:
        print("paddle-bundle proof: no command", file=sys.stderr)
        return EXIT_SETUP
    try:
        for folder in hidden:
            hide(folder)
        loopback_up()
        if uid is not None and gid is not None:
            map_user(uid, gid)
        if ready is not None:
            open(ready, "x").close()
    except OSError as exc:
        print(f"paddle-bundle proof: cannot prepare the offline sandbox: {exc}",
              file=sys.stderr)
        return EXIT_SETUP
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"paddle-bundle proof: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    return EXIT_SETUP  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
