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

import contextlib
import hashlib
import hmac
import json
import secrets
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
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

    def __init__(self, stream: ByteStream, reader: BufferedByteReceiveStream, send_key: bytes, recv_key: bytes) -> None:
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


async def server_handshake(stream: ByteStream, keys: Sequence[bytes], *, auth_timeout: float) -> SecureChannel:
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
    """zlib level 1; sent raw when it does not shrink by 10 % (media, random, encrypted).

    zlib is slow on incompressible input (~20 MB/s here against 400 MB/s on text), so a
    16 KiB sample from the middle of the chunk decides first."""
    if len(data) > 64 << 10:
        mid = len(data) // 2
        sample = data[mid : mid + (16 << 10)]
        if len(zlib.compress(sample, 1)) > len(sample) * 9 // 10:
            return b"\x00" + data
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


BATCH = 2 << 20  # bytes handed to / from a worker thread at a time


@contextlib.contextmanager
def _single_error() -> Iterator[None]:
    """Our task groups run a producer and a consumer: surface *the* error, not a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


class _FileReader:
    """Worker-thread side of :func:`send_blobs`: reads, hashes, compresses and seals
    frames, a batch at a time, across file boundaries (one thread hop per batch)."""

    def __init__(self, channel: SecureChannel, wanted: Sequence[str], sources: Mapping[str, str]) -> None:
        self._channel = channel
        self._wanted = list(wanted)
        self._sources = sources
        self._index = 0
        self._file: BinaryIO | None = None
        self._hash: Any = None
        self.broken: str | None = None
        self.sent = 0

    def batch(self) -> list[bytes]:
        frames: list[bytes] = []
        size = 0
        seal = self._channel.seal
        while size < BATCH and self._index < len(self._wanted):
            digest = self._wanted[self._index]
            if self._file is None:
                try:
                    self._file = open(self._sources[digest], "rb")  # noqa: SIM115
                except OSError as exc:
                    return self._fail(frames, digest, f"source file gone ({exc.strerror}); retry")
                self._hash = hashlib.sha256()
            data = self._file.read(CHUNK)
            if data:
                self._hash.update(data)
                frames.append(seal(DATA, encode_chunk(data)))
                size += len(data)
                self.sent += len(data)
                continue
            self._file.close()
            self._file = None
            if self._hash.hexdigest() != digest:
                return self._fail(frames, digest, "a source file changed during the transfer; retry")
            frames.append(seal(END, b""))
            self._index += 1
            size += 64
        return frames

    def _fail(self, frames: list[bytes], digest: str, message: str) -> list[bytes]:
        self.broken = digest
        self._index = len(self._wanted)
        frames.append(self._channel.seal(ERROR, json.dumps({"error": message}).encode()))
        return frames

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def send_blobs(
    channel: SecureChannel,
    wanted: Sequence[str],
    sources: Mapping[str, str],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> str | None:
    """Stream each wanted content, hashing as it is read. Returns the first digest whose
    file no longer matches its hash (changed since the scan), after telling the peer.
    Reading runs one batch ahead of the socket."""
    reader = _FileReader(channel, wanted, sources)
    send, receive = anyio.create_memory_object_stream[list[bytes]](1)

    async def produce() -> None:
        async with send:
            while True:
                frames = await anyio.to_thread.run_sync(reader.batch)
                if not frames:
                    return
                await send.send(frames)

    try:
        with _single_error():
            async with anyio.create_task_group() as tg, receive:
                tg.start_soon(produce)
                async for frames in receive:
                    before = reader.sent
                    for frame in frames:
                        await channel.send_frame(frame)
                    if on_progress is not None:
                        on_progress(reader.sent - before)
    finally:
        reader.close()
    return reader.broken


class _BlobWriter:
    """Worker-thread side of :func:`receive_blobs`."""

    def __init__(self, wanted: Sequence[str], open_blob: Callable[[str], BlobSink]) -> None:
        self._wanted = list(wanted)
        self._open_blob = open_blob
        self._index = 0
        self._sink: BlobSink | None = None
        self.done = not self._wanted

    def process(self, frames: list[tuple[bytes, bytes]]) -> int:
        size = 0
        for kind, payload in frames:
            if self.done:
                raise TransferError(f"unexpected message {kind!r} after the last file")
            if self._sink is None:
                self._sink = self._open_blob(self._wanted[self._index])
            if kind == DATA:
                data = decode_chunk(payload)
                self._sink.write(data)
                size += len(data)
            elif kind == END:
                sink, self._sink = self._sink, None
                sink.finish()
                self._index += 1
                self.done = self._index == len(self._wanted)
            elif kind == ERROR:
                raise TransferError(f"peer: {_error_text(payload)}")
            else:
                raise TransferError(f"unexpected message {kind!r} in a file transfer")
        return size

    def abort(self) -> None:
        if self._sink is not None:
            self._sink.abort()


async def receive_blobs(
    channel: SecureChannel,
    wanted: Sequence[str],
    open_blob: Callable[[str], BlobSink],
    *,
    idle: float,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Receive each wanted content into a sink (which checks the hash). Returns bytes.
    Decryption runs on the loop, decompression/hashing/writing in a worker thread, one
    batch behind the socket."""
    writer = _BlobWriter(wanted, open_blob)
    total = 0
    send, receive = anyio.create_memory_object_stream[list[tuple[bytes, bytes]]](1)

    async def consume() -> None:
        nonlocal total
        async with receive:
            async for frames in receive:
                n = await anyio.to_thread.run_sync(writer.process, frames)
                total += n
                if on_progress is not None and n:
                    on_progress(n)

    try:
        with _single_error():
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                async with send:
                    ends = 0
                    while ends < len(wanted):
                        frames: list[tuple[bytes, bytes]] = []
                        size = 0
                        while size < BATCH and ends < len(wanted):
                            kind, payload = await channel.receive(idle=idle)
                            frames.append((kind, payload))
                            size += len(payload) + 64
                            if kind == END:
                                ends += 1
                            elif kind == ERROR:
                                ends = len(wanted)
                        await send.send(frames)
    except BaseException:
        writer.abort()
        raise
    return total
