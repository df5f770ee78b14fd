"""asyncio runs on rselectors: asyncio.SelectorEventLoop(rselectors.X())."""

import asyncio
import socket

import pytest

import rselectors
from conftest import BACKEND_CLASSES

BACKENDS = ["DefaultSelector", *BACKEND_CLASSES]


def run(selector, coroutine_function, timeout=30.0):
    """Runs coroutine_function() on a SelectorEventLoop over `selector`."""
    loop = asyncio.SelectorEventLoop(selector)
    try:
        assert loop._selector is selector
        return loop.run_until_complete(asyncio.wait_for(coroutine_function(), timeout))
    finally:
        loop.close()  # closes the selector too


async def echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("backend", BACKENDS)
def test_streams_echo_round_trip(backend):
    selector = getattr(rselectors, backend)()

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(50):
            line = f"line {i}\n".encode()
            writer.write(line)
            assert await reader.readline() == line
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return "done"

    assert run(selector, main) == "done"
    assert selector.get_map() is None  # closed with the loop


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_clients_and_large_writes(backend):
    # Large payloads fill the socket buffers, so asyncio registers writers
    # (modify() to READ|WRITE and back) as well as readers.
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def client(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        got = await reader.readexactly(len(payload))
        writer.close()
        await writer.wait_closed()
        return got == payload

    async def main():
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        results = await asyncio.gather(*(client(port) for _ in range(8)))
        server.close()
        await server.wait_closed()
        return results

    assert run(getattr(rselectors, backend)(), main) == [True] * 8


def test_readers_writers_and_call_soon_threadsafe():
    selector = rselectors.DefaultSelector()

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        got = loop.create_future()
        loop.add_reader(a, lambda: got.set_result(a.recv(100)))
        writable = loop.create_future()
        loop.add_writer(a, lambda: writable.done() or writable.set_result(True))
        assert await writable
        assert loop.remove_writer(a)
        key = selector.get_key(a)
        assert key.events == rselectors.EVENT_READ
        b.send(b"ping")
        assert await got == b"ping"
        assert loop.remove_reader(a) and not loop.remove_reader(a)
        # A wake-up from another thread goes through the loop's self-pipe.
        woke = loop.create_future()
        loop.run_in_executor(None, loop.call_soon_threadsafe, woke.set_result, "woke")
        assert await woke == "woke"
        a.close()
        b.close()
        return True

    assert run(selector, main)
