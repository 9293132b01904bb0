"""A loopback TCP proxy for fault injection in integration tests (threads, stdlib only).

proxy = TcpProxy("127.0.0.1", 5672)      # listens on 127.0.0.1:proxy.port
proxy.cut()                              # close every open connection (both ends)
proxy.fail_http = 5                      # answer the next 5 connections with HTTP 503
proxy.drop_requests = 1                  # close the next connection that sends anything, unanswered
TcpProxy(host, port, tls=ssl_context)    # TLS-terminating (server side)
proxy.close()
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, tls: ssl.SSLContext | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls
        self.fail_http = 0
        self.drop_requests = 0
        self.dropped = 0
        self.failed = 0
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True).start()

    def cut(self) -> int:
        """Abruptly close every proxied connection; returns how many sockets were closed."""
        with self._lock:
            socks, self._open = list(self._open), set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        return len(socks)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self.tls is not None:
                client = self.tls.wrap_socket(client, server_side=True)
            with self._lock:
                fail = self.fail_http > 0
                if fail:
                    self.fail_http -= 1
            if fail:
                self._answer_503(client)
                return
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
            for s in (client, upstream):  # no Nagle: small request/response protocols
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, ssl.SSLError):
            with contextlib.suppress(OSError):
                client.close()
            return
        with self._lock:
            self._open.update((client, upstream))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream, requests=True)

    def _answer_503(self, client: socket.socket) -> None:
        client.settimeout(5)
        data = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
        self.failed += 1
        with contextlib.suppress(OSError):
            client.close()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool = False) -> None:
        first = requests
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if first:
                    first = False
                    with self._lock:
                        drop = self.drop_requests > 0
                        if drop:
                            self.drop_requests -= 1
                            self.dropped += 1
                    if drop:
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    s.close()
                with self._lock:
                    self._open.discard(s)
