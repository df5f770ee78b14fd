# Seed 002 (shared/seeds/002_*.txt): the server that answers in upper case.
# Changed from the seed: the import line, and the port (read from the
# command line, the seed's 8080 by default).
from socket import *
import rselectors as selectors
import sys

sel = selectors.DefaultSelector()


def accept(fileobj, mask):
    conn, _ = fileobj.accept()
    sel.register(conn, selectors.EVENT_READ, read)


def read(conn, mask):
    try:
        data = conn.recv(1024)
        if not data:
            print('closing', conn)
            sel.unregister(conn)
            conn.close()
            return  # 代替之前链接循环中的break
        conn.send(data.upper())
    except Exception as e:
        print(e)
        print('closing', conn)
        sel.unregister(conn)
        conn.close()


server = socket(AF_INET, SOCK_STREAM)
server.bind(('127.0.0.1', int(sys.argv[1]) if len(sys.argv) > 1 else 8080))
server.listen(5)
server.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
server.setblocking(False)
sel.register(server, selectors.EVENT_READ, accept)

while True:
    events = sel.select()
    for key, mask in events:
        callback = key.data
        callback(key.fileobj, mask)
