# pyright: strict
"""A small program typed against the standard library's selectors, run on
rselectors by its import line alone: `mypy --strict` (scripts/test-python)
and pyright accept it, and tests/test_typing.py runs it.

It echoes one message over a socket pair, the seeds' way: each key's data
is the handler to call."""

from __future__ import annotations

import selectors as std_selectors
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Optional

import rselectors as selectors

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

Handler = Callable[[socket.socket, int], None]


def registered(sel: std_selectors.BaseSelector) -> Mapping[FileDescriptorLike, std_selectors.SelectorKey]:
    """Code written for the standard library's types takes rselectors' selectors."""
    return sel.get_map()


def serve_once(sel: selectors.BaseSelector, timeout: Optional[float]) -> int:
    """One select(); calls each ready key's handler; returns how many ran."""
    ran = 0
    for key, mask in sel.select(timeout):
        handler: Handler = key.data
        fileobj = key.fileobj
        assert isinstance(fileobj, socket.socket)
        handler(fileobj, mask)
        ran += 1
    return ran


def main() -> None:
    near, far = socket.socketpair()
    received: list[bytes] = []

    def echo(conn: socket.socket, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            conn.sendall(conn.recv(1024))

    def collect(conn: socket.socket, mask: int) -> None:
        received.append(conn.recv(1024))

    with selectors.DefaultSelector() as sel:
        far_key: selectors.SelectorKey = sel.register(far, selectors.EVENT_READ, echo)
        sel.register(near, selectors.EVENT_READ, collect)
        assert sel.get_key(far) is far_key and registered(sel).get(far) is far_key
        near.sendall(b"ping")
        while not received:
            serve_once(sel, 5.0)
        sel.modify(far, selectors.EVENT_READ | selectors.EVENT_WRITE, echo)
        sel.unregister(near)
        epoll_fd: int = sel.fileno()
        assert epoll_fd >= 0
    near.close()
    far.close()
    print(received[0].decode())


if __name__ == "__main__":
    main()
