# Seed 000 (shared/seeds/000_*.txt), the CharServer: a chat server whose
# select() loop runs in a daemon thread while the main thread reads console
# commands (an empty line lists the registrations, `quit` stops).
# Changed from the seed: the import line, and the port, read from the
# command line (the seed's 9999 by default) so a test can pick a free one.
import rselectors as selectors
import socket
import datetime
import threading
import logging
import sys

FORMAT = '%(asctime)s %(process)s %(processName)s\t%(message)s'
logging.basicConfig(format=FORMAT, level=logging.INFO)


class CharServer:

    def __init__(self,ip='127.0.0.1',port=9999):
        self.sock = socket.socket()
        self.addr = ip,port
        self.event = threading.Event()
        self.selector = selectors.DefaultSelector()

    def start(self):
        self.sock.bind(self.addr)
        self.sock.listen()
        self.sock.setblocking(False)

        key = self.selector.register(self.sock,selectors.EVENT_READ,self.accept)
        logging.info('selector-----',key)

        threading.Thread(target=self.select,name='select',daemon=True).start()

    def select(self):
        while not self.event.is_set():
            events = self.selector.select()
            for key,mask in events:
                key.data(key.fileobj,mask)

    def accept(self,sock:socket.socket,mask):
        conn,raddr = sock.accept()
        conn.setblocking(False)
        key = self.selector.register(conn,selectors.EVENT_READ,self.recv)
        logging.info('accept-----',key)

    def recv(self,conn:socket.socket,mask):
        data = conn.recv(1024)
        print(data)
        if data.strip() == b'' or data.strip() == b'quit':
            self.selector.unregister(conn)
            conn.close()
            return

        for key in self.selector.get_map().values():

            #if key.fileobj is self.sock:continue

            # print(key.data)
            # print(self.recv)
            # print(key.data is self.recv)
            # print(key.data == self.recv)
            if key.data == self.recv:
                msg = 'your msg = {} from {}'.format(data.decode(), conn.getpeername()).encode()
                s = key.fileobj
                s.send(msg)

    def stop(self):
        self.event.set()
        fs = []
        for fd,key in self.selector.get_map().items():
            fs.append(key)
        for f in fs:
            self.selector.unregister(f)
            f.close()
        self.selector.close()

if __name__ == '__main__':
    cc =CharServer(port=int(sys.argv[1]) if len(sys.argv) > 1 else 9999)
    cc.start()
    while True:
        cmd = input(">>>>>>>>>>>>>").strip()
        if cmd == 'quit':
            cc.stop()
            break
        logging.info(threading.enumerate())
        logging.info(list(cc.selector.get_map().keys()))
        #logging.info(len(list(cc.selector.get_map().keys())))
        for fd,key in cc.selector.get_map().items():
            print(fd)
            print(key)
            print()
