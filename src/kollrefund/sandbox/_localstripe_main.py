"""Subprocess entry point: localstripe on 127.0.0.1 only, without persistence.

Run as ``python -m kollrefund.sandbox._localstripe_main --port 0``. It binds
127.0.0.1 (never ``[::]`` as stock localstripe does), prints ``PORT <n>`` on
stdout once the socket listens, and exits when its stdin closes, so it never
outlives the process that started it.

localstripe (GPL-3.0-or-later) is imported and wrapped here, never copied. Its
pickle persistence to the hard-coded ``/tmp/localstripe.pickle`` is switched off
before anything is stored, so each instance keeps its own state in memory.
The data-model half of the fidelity layer lives here too (:func:`_patch`): the
rules that need localstripe's objects (over-refund, uncaptured refund, reason,
PaymentIntent/Charge shape, partial capture, 404 wording, list filters, declines,
failed refunds). The transport half (keys, idempotency, faults) is in
``stripe_fidelity``. Each rule carries its documentation source in a comment.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from typing import Any


def _disable_persistence(resources: Any) -> None:
    # localstripe's Store.try_load_from_disk / dump_to_disk read and rewrite
    # /tmp/localstripe.pickle after every write; both become no-ops here.
    def _no_load(self: Any) -> None:
        return None

    def _no_dump(self: Any) -> None:
        return None

    resources.Store.try_load_from_disk = _no_load
    resources.Store.dump_to_disk = _no_dump


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin pipe open; EOF means it is gone (even after
    # SIGKILL), so leave at once rather than linger as a stray process.
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kollrefund-localstripe")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--no-parent-watch", action="store_true")
    args = parser.parse_args(argv)

    from localstripe import resources  # GPL dependency, imported only in this process

    _disable_persistence(resources)

    from aiohttp import web
    from localstripe import server

    _patch(resources, server, web)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    if not args.no_parent_watch:
        threading.Thread(target=_exit_when_parent_goes, daemon=True).start()

    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()
    web.run_app(server.app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
