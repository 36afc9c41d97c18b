"""The sync wire protocol: mutual authentication, an AEAD-framed stream, snapshot messages.

Handshake (both sides hold ``K = HKDF(group key, "sync v1")``)::

    client -> server   "HASUP-SYNC/1\\n" | client_nonce (32 random bytes)
    server -> client   server_nonce (32 random bytes)
    client -> server   HMAC-SHA256(K, "hasup sync client" | client_nonce | server_nonce)
    server -> client   HMAC-SHA256(K, "hasup sync server" | client_nonce | server_nonce)

The server proves nothing and sends no data before the client has proved the key (a
wrong key gets the connection closed); the client checks the server's proof before it
reads anything. The labels differ, so a proof cannot be reflected. Session keys:
``HKDF-SHA256(K, salt = client_nonce | server_nonce, info = "hasup sync v1 session")``,
64 bytes, one 32-byte ChaCha20-Poly1305 key per direction; fresh per connection.

Frames: ``length u32 | ChaCha20-Poly1305(key_dir, nonce = 0u32 | counter u64, plaintext,
aad = length)``; the counter starts at 0 for each direction and key, so a nonce is never
used twice with a key, and reordered, replayed, dropped or truncated frames fail to
decrypt. Plaintext = kind u8 | payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO, Protocol

import anyio
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..protocol import derive_key
from ._errors import AuthenticationFailed, TransferError

__all__ = [
    "CHUNK",
    "MAGIC",
    "SecureChannel",
    "BlobSink",
    "client_handshake",
    "receive_blobs",
    "send_blobs",
    "decode_chunk",
    "encode_chunk",
    "server_handshake",
    "sync_key",
]

MAGIC = b"HASUP-SYNC/1\n"
NONCE_LEN = 32
TAG_LEN = 32
CHUNK = 512 * 1024
MAX_FRAME = CHUNK + 4096
MAX_MESSAGE = 256 << 20

# message kinds
HELLO = b"H"
SNAPSHOT = b"S"
NO_CHANGE = b"N"
WANT = b"W"
DATA = b"C"
END = b"E"
ERROR = b"X"
DONE = b"D"
MORE = b"+"

_LEN = struct.Struct("!I")


def sync_key(group_key: bytes) -> bytes:
    """The sync channel's key, derived from the group key (label ``"sync v1"``)."""
    return derive_key(group_key, b"sync v1")


def _proof(key: bytes, role: bytes, cn: bytes, sn: bytes) -> bytes:
    return hmac.new(key, b"hasup sync " + role + cn + sn, hashlib.sha256).digest()


def _session_keys(key: bytes, cn: bytes, sn: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=cn + sn, info=b"hasup sync v1 session").derive(key)
    return okm[:32], okm[32:]


class SecureChannel:
    """Authenticated, encrypted, ordered frames over a byte stream."""

    def __init__(
        self, stream: ByteStream, reader: BufferedByteReceiveStream, send_key: bytes, recv_key: bytes
    ) -> None:
        self._stream = stream
        self._reader = reader
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._send_counter = 0
        self._recv_counter = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        if counter >= 1 << 64:
            raise TransferError("frame counter exhausted")
        return b"\x00\x00\x00\x00" + counter.to_bytes(8, "big")

    def seal(self, kind: bytes, payload: bytes) -> bytes:
        """Encrypt one frame (thread-safe to *call* off the loop; frames must then be sent
        in the order they were sealed)."""
        nonce = self._nonce(self._send_counter)
        self._send_counter += 1
        length = _LEN.pack(len(payload) + 1 + 16)
        return length + self._send.encrypt(nonce, kind + payload, length)

    async def send_frame(self, frame: bytes) -> None:
        try:
            await self._stream.send(frame)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise TransferError(f"connection lost while sending: {exc!r}") from exc

    async def send(self, kind: bytes, payload: bytes = b"") -> None:
        await self.send_frame(self.seal(kind, payload))

    async def send_json(self, kind: bytes, obj: Any) -> None:
        await self.send_big(kind, json.dumps(obj, separators=(",", ":")).encode())

    async def send_big(self, kind: bytes, data: bytes) -> None:
        """A message of any size: ``+`` frames then the final frame of ``kind``."""
        step = MAX_FRAME - 1024
        while len(data) > step:
            await self.send(MORE, data[:step])
            data = data[step:]
        await self.send(kind, data)

    async def receive(self, *, idle: float) -> tuple[bytes, bytes]:
        try:
            with anyio.fail_after(idle):
                header = await self._reader.receive_exactly(4)
                (length,) = _LEN.unpack(header)
                if not 17 <= length <= MAX_FRAME + 17:
                    raise TransferError(f"bad frame length {length}")
                body = await self._reader.receive_exactly(length)
        except TimeoutError:
            raise TransferError(f"peer silent for {idle:g}s") from None
        except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            raise TransferError(f"connection lost: {exc!r}") from exc
        try:
            plain = self._recv.decrypt(self._nonce(self._recv_counter), body, header)
        except InvalidTag:
            raise TransferError("frame failed authentication (tampered or out of order)") from None
        self._recv_counter += 1
        return plain[:1], plain[1:]

    async def receive_message(self, *, idle: float, limit: int = MAX_MESSAGE) -> tuple[bytes, bytes]:
        parts: list[bytes] = []
        size = 0
        while True:
            kind, payload = await self.receive(idle=idle)
            if kind == ERROR:
                raise TransferError(f"peer: {_error_text(payload)}")
            size += len(payload)
            if size > limit:
                raise TransferError("message too large")
            parts.append(payload)
            if kind != MORE:
                return kind, b"".join(parts)

    async def receive_json(self, expect: bytes, *, idle: float) -> Any:
        kind, data = await self.receive_message(idle=idle)
        if kind != expect:
            raise TransferError(f"unexpected message {kind!r}, wanted {expect!r}")
        try:
            return json.loads(data)
        except ValueError:
            raise TransferError("malformed message") from None

    async def aclose(self) -> None:
        await self._stream.aclose()


def _error_text(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("error", "error"))
    except (ValueError, AttributeError):
        return "error"


async def client_handshake(stream: ByteStream, key: bytes, *, auth_timeout: float) -> SecureChannel:
    """Authenticate as a client with ``key`` (from :func:`sync_key`)."""
    reader = BufferedByteReceiveStream(stream)
    cn = secrets.token_bytes(NONCE_LEN)
    try:
        with anyio.fail_after(auth_timeout):
            await stream.send(MAGIC + cn)
            sn = await reader.receive_exactly(NONCE_LEN)
            await stream.send(_proof(key, b"client", cn, sn))
            proof = await reader.receive_exactly(TAG_LEN)
    except TimeoutError:
        raise TransferError("authentication timed out") from None
    except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
        raise AuthenticationFailed(
            "the peer closed the connection during authentication (different group key?)"
        ) from exc
    if not hmac.compare_digest(proof, _proof(key, b"server", cn, sn)):
        raise AuthenticationFailed("the peer's proof does not match our group key")
    c2s, s2c = _session_keys(key, cn, sn)
    return SecureChannel(stream, reader, c2s, s2c)


async def server_handshake(
    stream: ByteStream, keys: Sequence[bytes], *, auth_timeout: float
) -> SecureChannel:
    """Authenticate a client against any of ``keys`` (two during a key rotation)."""
    reader = BufferedByteReceiveStream(stream)
    try:
        with anyio.fail_after(auth_timeout):
            hello = await reader.receive_exactly(len(MAGIC) + NONCE_LEN)
            if not hello.startswith(MAGIC):
                raise AuthenticationFailed("not a hasup sync client")
            cn = hello[len(MAGIC) :]
            sn = secrets.token_bytes(NONCE_LEN)
            await stream.send(sn)
            proof = await reader.receive_exactly(TAG_LEN)
            for key in keys:
                if hmac.compare_digest(proof, _proof(key, b"client", cn, sn)):
                    break
            else:
                raise AuthenticationFailed("client proof does not match the group key")
            await stream.send(_proof(key, b"server", cn, sn))
    except TimeoutError:
        raise AuthenticationFailed("client too slow to authenticate") from None
    except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
        raise AuthenticationFailed(f"client left during authentication: {exc!r}") from exc
    c2s, s2c = _session_keys(key, cn, sn)
    return SecureChannel(stream, reader, s2c, c2s)


def encode_chunk(data: bytes) -> bytes:
    """zlib level 1; sent raw when it does not shrink by 10 % (SQLite pages, media)."""
    packed = zlib.compress(data, 1)
    if len(packed) < len(data) * 9 // 10:
        return b"\x01" + packed
    return b"\x00" + data


def decode_chunk(payload: bytes) -> bytes:
    if payload[:1] == b"\x00":
        return payload[1:]
    if payload[:1] == b"\x01":
        d = zlib.decompressobj()
        out = d.decompress(payload[1:], CHUNK + 1)
        if len(out) > CHUNK or d.unconsumed_tail or not d.eof:
            raise TransferError("bad compressed chunk")
        return out
    raise TransferError("bad chunk flag")


class BlobSink(Protocol):
    """Where received content goes (:class:`hasup.sync.apply.BlobWriter`)."""

    def write(self, data: bytes) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


async def send_blobs(
    channel: SecureChannel,
    wanted: Sequence[str],
    sources: Mapping[str, str],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> str | None:
    """Stream each wanted content, hashing as it is read. Returns the first digest whose
    file no longer matches its hash (changed since the scan), after telling the peer."""
    for digest in wanted:
        path = sources[digest]
        h = hashlib.sha256()
        try:
            f = await anyio.to_thread.run_sync(open, path, "rb")
        except OSError as exc:
            await channel.send_json(ERROR, {"error": f"source file gone ({exc.strerror}); retry"})
            return digest
        try:

            def next_frame(f: BinaryIO = f, h: Any = h) -> tuple[bytes | None, int]:
                data = f.read(CHUNK)
                if not data:
                    return None, 0
                h.update(data)
                return channel.seal(DATA, encode_chunk(data)), len(data)

            while True:
                frame, size = await anyio.to_thread.run_sync(next_frame)
                if frame is None:
                    break
                await channel.send_frame(frame)
                if on_progress is not None:
                    on_progress(size)
        finally:
            f.close()
        if h.hexdigest() != digest:
            await channel.send_json(ERROR, {"error": "a source file changed during the transfer; retry"})
            return digest
        await channel.send(END)
    return None


async def receive_blobs(
    channel: SecureChannel,
    wanted: Sequence[str],
    open_blob: Callable[[str], BlobSink],
    *,
    idle: float,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Receive each wanted content into a sink (which checks the hash). Returns bytes."""
    total = 0
    for digest in wanted:
        sink = await anyio.to_thread.run_sync(open_blob, digest)
        try:
            while True:
                kind, payload = await channel.receive(idle=idle)
                if kind == DATA:

                    def store(payload: bytes = payload, sink: BlobSink = sink) -> int:
                        data = decode_chunk(payload)
                        sink.write(data)
                        return len(data)

                    size = await anyio.to_thread.run_sync(store)
                    total += size
                    if on_progress is not None:
                        on_progress(size)
                elif kind == END:
                    await anyio.to_thread.run_sync(sink.finish)
                    break
                elif kind == ERROR:
                    raise TransferError(f"peer: {_error_text(payload)}")
                else:
                    raise TransferError(f"unexpected message {kind!r} in a file transfer")
        except BaseException:
            sink.abort()
            raise
    return total
