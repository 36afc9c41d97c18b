"""The sync wire protocol: TLS 1.3 with mutual authentication, framed messages.

The channel is standard TLS 1.3 (Python's :mod:`ssl` over anyio streams): ephemeral
(EC)DHE key exchange, so a recorded session stays secret even if the group key leaks
later, and an AEAD record layer that refuses tampered, reordered, replayed or truncated
data. Both sides present a certificate and require the peer's (mutual authentication).

Identities come from the group key, so there is nothing new to distribute: for each
``[[sync]]`` directory, ``HKDF-SHA256(sync_key, salt = "hasup sync tls v2", info =
sync id)`` gives an Ed25519 key, and a self-signed certificate with fixed fields is built
from it (Ed25519 signatures are deterministic, so every member derives the very same
certificate). Each side trusts exactly the certificates of its own keys (two during a
key rotation) and nothing else: no CA, no system store, no host names. Because the sync
id (``id``, default the path) is part of the derivation, a follower that reaches another
directory's transfer server (ports swapped, ``[[sync]]`` listed in another order) fails
the handshake instead of applying the wrong data. See docs/security.md for the choice.

After the handshake the server speaks first (:data:`READY`, the protocol version), so a
client whose certificate the server refused learns it during authentication, not at its
first read. Frames: ``length u32 | kind u8 | payload`` (``length`` = 1 + payload).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import ssl
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO, Protocol

import anyio
import attrs
from anyio.abc import ByteStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import NameOID

from ..protocol import derive_key
from ._errors import AuthenticationFailed, TransferError

__all__ = [
    "CHUNK",
    "READY",
    "BlobSink",
    "ChannelContexts",
    "SecureChannel",
    "channel_contexts",
    "client_handshake",
    "decode_chunk",
    "encode_chunk",
    "receive_blobs",
    "send_blobs",
    "server_handshake",
    "sync_key",
]

#: The server's first message after the TLS handshake: the protocol version.
READY = b"HASUP-SYNC/2\n"
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
_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NEVER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def sync_key(group_key: bytes) -> bytes:
    """The sync channel's key, derived from the group key (label ``"sync v1"``)."""
    return derive_key(group_key, b"sync v1")


def identity(key: bytes, sync_id: str) -> tuple[bytes, bytes]:
    """``(certificate PEM, private key PEM)`` of one directory's identity under ``key``
    (from :func:`sync_key`). Deterministic: every member derives the same pair."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"hasup sync tls v2", info=sync_id.encode()).derive(key)
    private = Ed25519PrivateKey.from_private_bytes(seed)
    fingerprint = hashlib.sha256(private.public_key().public_bytes_raw()).hexdigest()[:16]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hasup sync {fingerprint}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(int(fingerprint, 16) | 1)
        .not_valid_before(_EPOCH)
        .not_valid_after(_NEVER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(private, None)
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _load_identity(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` wants a path: hand it an anonymous in-memory file, so the
    derived private key never touches a disk."""
    fd = os.memfd_create("hasup-sync-identity", os.MFD_CLOEXEC)
    try:
        os.write(fd, key + cert)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@attrs.frozen
class ChannelContexts:
    """The TLS contexts of one ``[[sync]]`` directory (see :func:`channel_contexts`)."""

    server: ssl.SSLContext
    client: ssl.SSLContext


def channel_contexts(keys: Sequence[bytes], sync_id: str) -> ChannelContexts:
    """TLS 1.3-only contexts: we present the identity of ``keys[0]`` and trust the
    identities of all ``keys`` (the new and the old key during a rotation)."""
    if not keys:
        raise ValueError("the sync channel needs a key")
    identities = [identity(k, sync_id) for k in keys]
    trusted = b"".join(cert for cert, _ in identities).decode("ascii")
    contexts = []
    for purpose in (ssl.PROTOCOL_TLS_SERVER, ssl.PROTOCOL_TLS_CLIENT):
        context = ssl.SSLContext(purpose)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=trusted)
        _load_identity(context, *identities[0])
        contexts.append(context)
    return ChannelContexts(contexts[0], contexts[1])


_LOST = (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class SecureChannel:
    """Ordered frames over an authenticated TLS stream."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)

    @staticmethod
    def seal(kind: bytes, payload: bytes) -> bytes:
        """Frame one message (pure; safe to call from a worker thread)."""
        return _LEN.pack(len(payload) + 1) + kind + payload

    async def send_frame(self, frame: bytes) -> None:
        try:
            await self._stream.send(frame)
        except (*_LOST, ssl.SSLError) as exc:
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
                (length,) = _LEN.unpack(await self._reader.receive_exactly(4))
                if not 1 <= length <= MAX_FRAME + 1:
                    raise TransferError(f"bad frame length {length}")
                body = await self._reader.receive_exactly(length)
        except TimeoutError:
            raise TransferError(f"peer silent for {idle:g}s") from None
        except ssl.SSLError as exc:
            raise TransferError(f"TLS record refused (tampered stream?): {exc.reason or exc}") from exc
        except _LOST as exc:
            raise TransferError(f"connection lost: {exc!r}") from exc
        return body[:1], body[1:]

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

    async def receive_json(self, expect: bytes, *, idle: float, limit: int = MAX_MESSAGE) -> Any:
        kind, data = await self.receive_message(idle=idle, limit=limit)
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


_MISMATCH = "the peer has another group key, or serves another [[sync]] directory (id/path or port differ)"


async def client_handshake(stream: ByteStream, contexts: ChannelContexts, *, auth_timeout: float) -> SecureChannel:
    """Authenticate as a client (TLS 1.3, mutual) and wait for the server's READY."""
    try:
        with anyio.fail_after(auth_timeout):
            tls = await TLSStream.wrap(
                stream, server_side=False, ssl_context=contexts.client, standard_compatible=False
            )
            channel = SecureChannel(tls)
            ready = await channel._reader.receive_exactly(len(READY))
    except TimeoutError:
        raise TransferError("authentication timed out") from None
    except ssl.SSLError as exc:
        raise AuthenticationFailed(f"TLS handshake failed ({exc.reason or exc}): {_MISMATCH}") from exc
    except _LOST as exc:
        raise AuthenticationFailed(f"the peer closed the connection during authentication: {_MISMATCH}") from exc
    if ready != READY:
        raise AuthenticationFailed(f"the peer speaks another protocol ({ready!r})")
    return channel


async def server_handshake(stream: ByteStream, contexts: ChannelContexts, *, auth_timeout: float) -> SecureChannel:
    """Authenticate a client (TLS 1.3, its certificate required) and send READY."""
    try:
        with anyio.fail_after(auth_timeout):
            tls = await TLSStream.wrap(stream, server_side=True, ssl_context=contexts.server, standard_compatible=False)
            await tls.send(READY)
    except TimeoutError:
        raise AuthenticationFailed("client too slow to authenticate") from None
    except ssl.SSLError as exc:
        raise AuthenticationFailed(f"TLS handshake failed: {exc.reason or exc}") from exc
    except _LOST as exc:
        raise AuthenticationFailed(f"client left during authentication: {exc!r}") from exc
    return SecureChannel(tls)


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
