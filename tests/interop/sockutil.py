"""Socket helpers shared by the raw protocol clients of the interop tests
(flood.py, nbd-tls-client.py): imported from the script's own folder."""


def recv_exact(s, n, timeout=None):
    """Exactly n bytes from s (timeout in seconds when given, else the
    socket's own); EOFError when the peer closes first."""
    if timeout is not None:
        s.settimeout(timeout)
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes" % (len(b), n))
        b += chunk
    return b
