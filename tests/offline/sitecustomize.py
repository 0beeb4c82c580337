"""Loaded by every Python process of the offline test (it is on their PYTHONPATH): records each attempt to
reach the network — a DNS lookup or a connection to anything but this machine — in $SFTBOOK_NETWORK_LOG,
and refuses it when $SFTBOOK_BLOCK_NETWORK=1 (where no network namespace is available).

A lookup made by ``sftbook.env.hub_reachable`` is the book's deliberate, announced check, and is marked so.
"""

import os
import sys

LOG = os.environ.get("SFTBOOK_NETWORK_LOG")
BLOCK = os.environ.get("SFTBOOK_BLOCK_NETWORK") == "1"
LOCAL_NAMES = {"", "localhost", "0.0.0.0", "::1"}


def _deliberate() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "hub_reachable":
            return True
        frame = frame.f_back
    return False


def _audit(event: str, args: tuple) -> None:
    if event == "socket.getaddrinfo":
        host = args[0].decode() if isinstance(args[0], bytes) else str(args[0] or "")
    elif event == "socket.connect":
        address = args[1]
        if not isinstance(address, tuple):  # a Unix socket
            return
        host = str(address[0])
    else:
        return
    if host in LOCAL_NAMES or host.startswith("127."):
        return
    kind = "deliberate" if _deliberate() else "UNANNOUNCED"
    if LOG:
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(f"{kind}\t{event}\t{host}\t{os.getpid()}\t{' '.join(sys.argv)[:200]}\n")
    if BLOCK:
        raise OSError(f"network access to {host} blocked by the offline test")


if LOG or BLOCK:
    sys.addaudithook(_audit)
