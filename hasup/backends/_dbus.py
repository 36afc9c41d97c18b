"""A small D-Bus client connection on anyio, built on jeepney's sans-I/O core.

jeepney parses and serialises messages and runs the SASL handshake without doing any
I/O itself; this module adds the I/O with anyio, so the same code serves asyncio and
trio (jeepney's own ``jeepney.io.*`` modules are one per event loop).

There is deliberately **no background reader task**: a connection has no task group
whose lifetime would tie it to the task that opened it. Whoever waits for something
(a reply, a signal) and finds nobody reading becomes the reader, dispatches every
message it parses (replies to their callers, signals to every matching subscription
queue) until its own wait is satisfied, then hands over by waking the other waiters.
Signals that arrive while nobody waits stay in the kernel socket buffer, then in the
subscription queues, so none is lost between two ``receive()`` calls.

Only what the systemd backend needs: method calls, AddMatch, local signal filters.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
from anyio.abc import SocketStream
from jeepney import HeaderFields, Message, MessageType, Parser
from jeepney.auth import BEGIN, AuthenticationError, Authenticator
from jeepney.bus import get_connectable_addresses
from jeepney.bus_messages import MatchRule, message_bus

__all__ = ["DBusConnection", "DBusError", "DBusConnectionLost", "MatchRule", "Subscription"]

_AUTH_TIMEOUT = 5.0


class DBusConnectionLost(Exception):
    """The bus connection could not be opened, or it closed."""


class DBusError(Exception):
    """An error reply to a method call: ``name`` is the D-Bus error name."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message
        super().__init__(f"{name}: {message}" if message else name)


class Subscription:
    """Signals matching one local rule, queued until :meth:`receive` takes them."""

    def __init__(self, conn: DBusConnection, rule: MatchRule, stamp: Callable[[], object] | None) -> None:
        self._conn = conn
        self.rule = rule
        self._stamp = stamp
        self.queue: collections.deque[tuple[Message, object]] = collections.deque()
        #: What ``stamp()`` returned when the last received signal was read off the socket.
        self.last_stamp: object = None

    def _put(self, msg: Message) -> None:
        self.queue.append((msg, self._stamp() if self._stamp is not None else None))

    async def receive(self) -> Message:
        """The next matching signal; :class:`DBusConnectionLost` if the bus goes away."""
        while not self.queue:
            await self._conn._wait_for(lambda: bool(self.queue))
        msg, self.last_stamp = self.queue.popleft()
        return msg


class DBusConnection:
    """One authenticated client connection to a message bus."""

    def __init__(self, stream: SocketStream, parser: Parser) -> None:
        self._stream = stream
        self._parser = parser
        self._serials = itertools.count(1)
        self._send_lock = anyio.Lock()
        self._replies: dict[int, Message] = {}
        self._pending: set[int] = set()
        self._subscriptions: list[Subscription] = []
        self._reading = False
        self._sleepers: set[anyio.Event] = set()
        self._lost: BaseException | None = None
        self.unique_name = ""

    @classmethod
    async def open(cls, address: str) -> DBusConnection:
        """Connect to ``address`` (``unix:path=…`` or ``unix:abstract=…``), authenticate
        (EXTERNAL, i.e. our uid) and say Hello."""
        try:
            path = next(get_connectable_addresses(address))
        except (RuntimeError, ValueError, StopIteration) as exc:
            raise DBusConnectionLost(f"unusable bus address {address!r}: {exc}") from exc
        try:
            stream = await anyio.connect_unix(path)
        except OSError as exc:
            raise DBusConnectionLost(f"cannot connect to {address}: {exc.strerror or exc}") from exc
        parser = Parser()
        try:
            with anyio.fail_after(_AUTH_TIMEOUT):
                auth = Authenticator()  # sends the leading NUL byte itself
                for line in auth:
                    await stream.send(line)
                    auth.feed(await stream.receive())
                await stream.send(BEGIN)
        except (
            OSError,
            anyio.EndOfStream,
            anyio.BrokenResourceError,
            AuthenticationError,
            TimeoutError,
        ) as exc:
            await stream.aclose()
            raise DBusConnectionLost(f"authentication on {address} failed: {exc!r}") from exc
        conn = cls(stream, parser)
        try:
            reply = await conn.call(message_bus.Hello())
        except BaseException:
            await conn.aclose()
            raise
        conn.unique_name = reply[0]
        return conn

    @property
    def closed(self) -> bool:
        return self._lost is not None

    async def aclose(self) -> None:
        if self._lost is None:
            self._lost = DBusConnectionLost("connection closed")
        self._wake_all()
        await self._stream.aclose()

    # -- sending ----------------------------------------------------------------------
    async def call(self, msg: Message) -> tuple[Any, ...]:
        """Send a method call and return the body of its reply; :class:`DBusError`
        for an error reply."""
        serial = next(self._serials)
        self._pending.add(serial)
        try:
            await self._send(msg, serial)
            await self._wait_for(lambda: serial in self._replies)
        finally:
            self._pending.discard(serial)
            reply = self._replies.pop(serial, None)
        assert reply is not None
        if reply.header.message_type is MessageType.error:
            name = reply.header.fields.get(HeaderFields.error_name, "org.freedesktop.DBus.Error.Failed")
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise DBusError(name, text)
        body: tuple[Any, ...] = reply.body
        return body

    async def add_match(self, rule: MatchRule) -> None:
        """Ask the bus to route signals matching ``rule`` to us (see :meth:`subscribe`)."""
        await self.call(message_bus.AddMatch(rule))

    async def _send(self, msg: Message, serial: int) -> None:
        if self._lost is not None:
            raise DBusConnectionLost(str(self._lost))
        data = msg.serialise(serial)
        async with self._send_lock:
            # Shielded: a message cut in half by a cancellation would corrupt the stream.
            with anyio.CancelScope(shield=True):
                try:
                    await self._stream.send(data)
                except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                    self._set_lost(DBusConnectionLost(f"bus connection lost: {exc!r}"))
                    raise DBusConnectionLost(str(self._lost)) from exc

    # -- receiving --------------------------------------------------------------------
    @contextmanager
    def subscribe(self, rule: MatchRule, *, stamp: Callable[[], object] | None = None) -> Iterator[Subscription]:
        """Queue incoming signals that match ``rule`` locally while the block runs.

        The bus only sends what an :meth:`add_match` rule asked for; this is the local
        filter on top, so that subscribing costs no round trip. ``stamp()``, if given,
        is recorded with each signal at the moment it is read off the socket.
        """
        sub = Subscription(self, rule, stamp)
        self._subscriptions.append(sub)
        try:
            yield sub
        finally:
            self._subscriptions.remove(sub)

    async def _wait_for(self, done: Callable[[], bool]) -> None:
        while not done():
            if self._lost is not None:
                raise DBusConnectionLost(str(self._lost))
            if self._reading:
                wakeup = anyio.Event()
                self._sleepers.add(wakeup)
                try:
                    await wakeup.wait()
                finally:
                    self._sleepers.discard(wakeup)
                continue
            self._reading = True
            try:
                while not done():
                    await self._read_some()
            finally:
                self._reading = False
                self._wake_all()  # someone else may need to take over reading

    async def _read_some(self) -> None:
        try:
            data = await self._stream.receive()
        except (anyio.EndOfStream, OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._set_lost(DBusConnectionLost(f"bus connection lost: {exc!r}"))
            raise DBusConnectionLost(str(self._lost)) from exc
        # No checkpoint between receiving the bytes and parsing them: nothing is lost
        # if the reader is cancelled.
        self._parser.add_data(data)
        while (msg := self._parser.get_next_message()) is not None:
            self._dispatch(msg)

    def _dispatch(self, msg: Message) -> None:
        kind = msg.header.message_type
        if kind in (MessageType.method_return, MessageType.error):
            serial = msg.header.fields.get(HeaderFields.reply_serial)
            if serial in self._pending:  # else: its caller was cancelled
                self._replies[serial] = msg
                self._wake_all()
        elif kind is MessageType.signal:
            woke = False
            for sub in self._subscriptions:
                if sub.rule.matches(msg):
                    sub._put(msg)
                    woke = True
            if woke:
                self._wake_all()

    def _set_lost(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        self._wake_all()

    def _wake_all(self) -> None:
        for event in self._sleepers:
            event.set()
        self._sleepers.clear()
