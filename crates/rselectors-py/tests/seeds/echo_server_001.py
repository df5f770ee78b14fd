# Seed 001 (shared/seeds/001_*.txt): the echo server of the selectors
# tutorial. Changed from the seed: the import line, the port (read from the
# command line, the seed's 9003 by default), and the call of server() at the
# end, which the seed leaves to the reader.
import socket
import rselectors as selectors
import sys

sel = selectors.DefaultSelector()


def accept(sock, mask):
    conn, addr = sock.accept()
    print('accepted', conn, 'from', addr)
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ, read)


def read(conn, mask):
    data = conn.recv(1024)
    if data:
        print('recv data: ', str(data, encoding='utf8'))
        conn.send(data)
    else:
        print('closing', conn)
        sel.unregister(conn)
        conn.close()


def server():
    sock = socket.socket()
    sock.bind(('localhost', int(sys.argv[1]) if len(sys.argv) > 1 else 9003))
    sock.listen(100)
    sock.setblocking(False)
    sel.register(sock, selectors.EVENT_READ, accept)

    while True:
        events = sel.select()
        for key, mask in events:
            callback = key.data
            callback(key.fileobj, mask)


server()
