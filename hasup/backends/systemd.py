"""The systemd backend: run jobs for one unit over D-Bus and watch its state signals.

``[service] backend = "systemd"``. Talks to systemd's manager on the system bus
(``org.freedesktop.systemd1``) through :mod:`hasup.backends._dbus`, a small anyio
connection on jeepney's sans-I/O core, so it runs on asyncio and trio alike and never
blocks the event loop. See ``docs/backends/systemd.md``.

Rules this module keeps (systemd 252 behaviour, measured on the test fixture):

* ``Manager.Subscribe()`` first, or systemd emits no unit ``PropertiesChanged``.
* Subscribe to ``JobRemoved`` *before* calling ``StartUnit``/``StopUnit``: a job may
  finish before the reply with its path is read.
* Under ``Restart=`` a crash passes through ``failed`` only briefly; the unit then sits
  in ``activating/auto-restart``. That sub-state, and a rise of ``NRestarts``, are
  crashes too, so a crash that systemd repairs still reaches the core as ``FAILED``.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
from jeepney import DBusAddress, new_method_call

from .._errors import BackendError, BackendUnavailable, ServiceFailed
from ._dbus import DBusConnection, DBusConnectionLost, DBusError, MatchRule, Subscription
from .base import ServiceBackend, ServiceStatus

if TYPE_CHECKING:
    from typing import Self

    from .._section import Section

__all__ = ["SystemdBackend", "UnitFailed"]

DEFAULT_BUS = "unix:path=/run/dbus/system_bus_socket"
JOB_MODES = ("replace", "fail", "isolate", "ignore-dependencies", "ignore-requirements", "flush")
RESTART_BY = ("hasup", "systemd")
RECONNECT_MIN = 0.05
RECONNECT_MAX = 5.0

_SYSTEMD = "org.freedesktop.systemd1"
_MANAGER = DBusAddress("/org/freedesktop/systemd1", _SYSTEMD, f"{_SYSTEMD}.Manager")
_UNIT_IFACE = f"{_SYSTEMD}.Unit"
_SERVICE_IFACE = f"{_SYSTEMD}.Service"
_PROPS_IFACE = "org.freedesktop.DBus.Properties"
_STOPPED_STATES = ("inactive", "failed")
_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
_DENIED = (
    "org.freedesktop.DBus.Error.AccessDenied",
    "org.freedesktop.systemd1.InteractiveAuthorizationRequired",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
)
_LOAD_STATES = {
    "not-found": "does not exist",
    "masked": "is masked",
    "bad-setting": "has an invalid setting",
    "error": "failed to load",
}
_STATUS = {
    "active": ServiceStatus.RUNNING,
    "reloading": ServiceStatus.STARTING,
    "refreshing": ServiceStatus.RUNNING,
    "activating": ServiceStatus.STARTING,
    "deactivating": ServiceStatus.STOPPING,
    "inactive": ServiceStatus.STOPPED,
    "failed": ServiceStatus.FAILED,
}
# siginfo si_code values systemd reports as ExecMainCode
_CLD = {1: "exited", 2: "killed", 3: "dumped core"}


def map_state(active_state: str, sub_state: str) -> ServiceStatus:
    """hasup's view of a unit's (ActiveState, SubState)."""
    if sub_state.startswith("auto-restart"):
        return ServiceStatus.FAILED  # it died; systemd will restart it after RestartSec
    return _STATUS.get(active_state, ServiceStatus.UNKNOWN)


class UnitFailed(ServiceFailed):
    """A start or stop job did not succeed; carries what systemd knows about why."""

    def __init__(self, message: str, *, unit: str, job_result: str = "", facts: dict[str, Any] | None = None):
        facts = facts or {}
        self.unit = unit
        self.job_result = job_result
        self.active_state: str = facts.get("ActiveState", "")
        self.sub_state: str = facts.get("SubState", "")
        self.result: str = facts.get("Result", "")
        self.exec_main_code: int = facts.get("ExecMainCode", 0)
        self.exec_main_status: int = facts.get("ExecMainStatus", 0)
        super().__init__(f"{unit}: {message}{describe_facts(job_result, facts)}")


def describe_facts(job_result: str, facts: dict[str, Any]) -> str:
    parts = []
    if job_result:
        parts.append(f"job {job_result}")
    if facts.get("ActiveState"):
        parts.append(f"state {facts['ActiveState']}/{facts.get('SubState', '?')}")
    if facts.get("Result"):
        parts.append(f"Result={facts['Result']}")
    code = facts.get("ExecMainCode", 0)
    status = facts.get("ExecMainStatus", 0)
    if code == 1:
        parts.append(f"main process exited with status {status}")
    elif code in (2, 3):
        try:
            name = signal.Signals(status).name
        except ValueError:
            name = str(status)
        parts.append(f"main process {_CLD[code]} by signal {name}")
    return f" ({', '.join(parts)})" if parts else ""


class SystemdBackend(ServiceBackend):
    """Start, stop and watch one systemd unit over D-Bus."""

    kind: ClassVar[str] = "systemd"

    def __init__(
        self,
        unit: str,
        *,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        job_mode: str = "replace",
        restart_by: str = "hasup",
        bus: str | None = None,
    ) -> None:
        self.unit = unit
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.job_mode = job_mode
        self.restart_by = restart_by
        self.bus = bus or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_BUS
        self._conn: DBusConnection | None = None
        self._unit_path = ""
        self._conn_lock = anyio.Lock()
        # Own operations: a crash seen while none runs is latched as FAILED (restart_by
        # = "hasup") until the next start()/stop() begins.
        self._op_epoch = 0
        self._op_busy = 0
        self._latched_epoch: int | None = None

    @classmethod
    def from_config(cls, section: Section) -> Self:
        section.raw("backend")
        unit = section.get_str("unit")
        if not unit or "/" in unit:
            raise section.error("unit", f"expected a unit name such as 'neuronex.service', got {unit!r}")
        if "." not in unit:
            unit += ".service"
        backend = cls(
            unit,
            start_timeout=section.get_duration("start_timeout", 90.0, min=0.001),
            stop_timeout=section.get_duration("stop_timeout", 30.0, min=0.001),
            job_mode=section.get_str("job_mode", "replace", choices=JOB_MODES),
            restart_by=section.get_str("restart_by", "hasup", choices=RESTART_BY),
            bus=section.get_str("bus", None),
        )
        section.finish()
        return backend

    def describe(self) -> str:
        return f"systemd unit {self.unit} on {self.bus} (restart_by={self.restart_by})"

    # -- connection ------------------------------------------------------------------
    async def _connection(self) -> DBusConnection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        async with self._conn_lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            await self._drop_connection()
            try:
                conn = await DBusConnection.open(self.bus)
            except DBusConnectionLost as exc:
                raise BackendUnavailable(f"systemd: {exc}") from exc
            try:
                # Signal routing first, then Subscribe: nothing is emitted before both.
                await conn.add_match(self._job_rule())
                (path,) = await self._call_on(conn, _MANAGER, "LoadUnit", "s", (self.unit,))
                self._unit_path = path
                await conn.add_match(self._props_rule())
                await self._call_on(conn, _MANAGER, "Subscribe")
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await conn.aclose()
                raise
            self._conn = conn
            return conn

    async def aclose(self) -> None:
        await self._drop_connection()

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await conn.aclose()

    def _job_rule(self) -> MatchRule:
        return MatchRule(type="signal", interface=_MANAGER.interface, member="JobRemoved", path=_MANAGER.object_path)

    def _props_rule(self) -> MatchRule:
        return MatchRule(type="signal", interface=_PROPS_IFACE, member="PropertiesChanged", path=self._unit_path)

    async def _call_on(
        self,
        conn: DBusConnection,
        obj: DBusAddress,
        method: str,
        sig: str | None = None,
        body: tuple[Any, ...] = (),
    ) -> tuple[Any, ...]:
        """One method call, with D-Bus failures mapped to hasup's errors."""
        try:
            return await conn.call(new_method_call(obj, method, sig, body))
        except DBusConnectionLost as exc:
            raise BackendUnavailable(f"systemd: {exc}") from exc
        except DBusError as exc:
            if exc.name in _DENIED:
                raise BackendError(
                    f"systemd refused {method} for {self.unit}: permission denied "
                    f"({exc.message or exc.name}). "
                    "Run hasup as root, or grant this user org.freedesktop.systemd1.manage-units "
                    "through a polkit rule (see docs/backends/systemd.md)"
                ) from exc
            if exc.name == _NO_SUCH_UNIT:
                raise BackendError(f"systemd has no unit {self.unit!r}: {exc.message}") from exc
            if exc.name in (
                "org.freedesktop.DBus.Error.ServiceUnknown",
                "org.freedesktop.DBus.Error.NameHasNoOwner",
            ):
                # systemd has not (re)joined the bus yet, e.g. right after a dbus restart.
                raise BackendUnavailable(f"systemd is not on the bus {self.bus}: {exc}") from exc
            raise BackendError(f"systemd {method} for {self.unit} failed: {exc}") from exc

    async def _get_all(self, conn: DBusConnection, interface: str) -> dict[str, Any]:
        obj = DBusAddress(self._unit_path, _SYSTEMD, _PROPS_IFACE)
        try:
            (props,) = await self._call_on(conn, obj, "GetAll", "s", (interface,))
        except BackendUnavailable:
            raise
        except BackendError:
            if interface == _SERVICE_IFACE:
                return {}  # not a service unit (a target, a mount): no main process facts
            raise
        return {name: value for name, (_sig, value) in props.items()}

    async def _unit_props(self, conn: DBusConnection, *names: str) -> dict[str, Any]:
        """A few Unit properties, one Get each: cheaper than parsing a whole GetAll."""
        obj = DBusAddress(self._unit_path, _SYSTEMD, _PROPS_IFACE)
        values = {}
        for name in names:
            ((_sig, value),) = await self._call_on(conn, obj, "Get", "ss", (_UNIT_IFACE, name))
            values[name] = value
        return values

    async def _facts(self, conn: DBusConnection) -> dict[str, Any]:
        facts = await self._get_all(conn, _UNIT_IFACE)
        facts.update(await self._get_all(conn, _SERVICE_IFACE))
        return facts

    def _load_problem(self, facts: dict[str, Any]) -> str | None:
        load_state = str(facts.get("LoadState", ""))
        if load_state == "loaded":
            return None
        error = facts.get("LoadError", ("", ""))
        detail = f": {error[1]}" if isinstance(error, tuple) and len(error) == 2 and error[1] else ""
        what = _LOAD_STATES.get(load_state, f"cannot be loaded (LoadState={load_state})")
        return f"systemd unit {self.unit!r} {what}{detail}"

    async def _require_loaded(self, conn: DBusConnection) -> None:
        facts = await self._unit_props(conn, "LoadState", "ActiveState")
        if facts["LoadState"] == "loaded":
            return
        facts = await self._get_all(conn, _UNIT_IFACE)
        problem = self._load_problem(facts)
        if problem and facts.get("ActiveState") in ("inactive", None):
            raise BackendError(problem)

    # -- operations ------------------------------------------------------------------
    def _stamp(self) -> tuple[int, bool]:
        return self._op_epoch, self._op_busy > 0

    def _begin_op(self) -> None:
        self._op_epoch += 1
        self._op_busy += 1
        self._latched_epoch = None

    async def _run_job(self, conn: DBusConnection, jobs: Subscription, method: str, limit: float) -> str:
        """Queue a job and return its result (``done``, ``failed``, …); TimeoutError."""
        (job,) = await self._call_on(conn, _MANAGER, method, "ss", (self.unit, self.job_mode))
        with anyio.fail_after(limit):
            while True:
                try:
                    msg = await jobs.receive()
                except DBusConnectionLost as exc:
                    raise BackendUnavailable(f"systemd: {exc}") from exc
                _id, path, _unit, result = msg.body
                if path == job:
                    return str(result)

    async def start(self, *, term: int = 0) -> None:
        """Run a start job and return once the unit is active (idempotent).

        ``term`` (the fencing token) is not passed on: a unit's environment comes from
        its unit file, and ``systemctl set-environment`` would change the manager's
        environment for every unit, not this one start. See docs/backends.md.
        """
        self._begin_op()
        try:
            conn = await self._connection()
            await self._require_loaded(conn)
            with conn.subscribe(self._job_rule()) as jobs:
                try:
                    result = await self._run_job(conn, jobs, "StartUnit", self.start_timeout)
                except TimeoutError:
                    raise UnitFailed(
                        f"start did not finish within {self.start_timeout:g}s",
                        unit=self.unit,
                        facts=await self._facts(conn),
                    ) from None
            state = await self._unit_props(conn, "ActiveState")
            if result == "done" and state["ActiveState"] in ("active", "reloading", "refreshing"):
                return
            facts = await self._facts(conn)
            if result == "canceled":
                raise BackendError(
                    f"{self.unit}: start job was canceled (another job replaced it)" + describe_facts("", facts)
                )
            raise UnitFailed("start failed", unit=self.unit, job_result=result, facts=facts)
        finally:
            self._op_busy -= 1

    async def stop(self) -> None:
        """Run a stop job; SIGKILL the unit if it fails or times out. Return only once
        the unit is confirmed inactive, else raise (idempotent)."""
        self._begin_op()
        try:
            conn = await self._connection()
            facts = await self._unit_props(conn, "LoadState", "ActiveState")
            if facts["LoadState"] != "loaded" and facts["ActiveState"] == "inactive":
                return  # no such unit and nothing running under its name
            with conn.subscribe(self._job_rule()) as jobs, conn.subscribe(self._props_rule()) as changes:
                try:
                    result = await self._run_job(conn, jobs, "StopUnit", self.stop_timeout)
                except TimeoutError:
                    result = "timeout (hasup stop_timeout)"
                if result == "done" and await self._is_stopped(conn):
                    return await self._reset_failed(conn)
                # Escalate: the stop job failed or hangs. KillUnit does not wait for jobs.
                kill = (self.unit, "all", int(signal.SIGKILL))
                try:
                    await self._call_on(conn, _MANAGER, "KillUnit", "ssi", kill)
                except BackendUnavailable:
                    raise
                except BackendError as exc:
                    if not isinstance(exc.__cause__, DBusError) or exc.__cause__.name != _NO_SUCH_UNIT:
                        raise
                    # unloaded meanwhile: systemd only unloads units that have no processes
                if await self._wait_stopped(conn, changes, self.stop_timeout):
                    return await self._reset_failed(conn)
                raise UnitFailed(
                    "could not confirm the unit stopped, even after SIGKILL",
                    unit=self.unit,
                    job_result=result,
                    facts=await self._facts(conn),
                )
        finally:
            self._op_busy -= 1

    async def _is_stopped(self, conn: DBusConnection) -> bool:
        facts = await self._unit_props(conn, "ActiveState", "SubState")
        sub_state = str(facts.get("SubState"))
        return facts.get("ActiveState") in _STOPPED_STATES and not sub_state.startswith("auto-restart")

    async def _wait_stopped(self, conn: DBusConnection, changes: Subscription, limit: float) -> bool:
        with anyio.move_on_after(limit):
            while True:
                if await self._is_stopped(conn):
                    return True
                try:
                    await changes.receive()
                except DBusConnectionLost as exc:
                    raise BackendUnavailable(f"systemd: {exc}") from exc
        return False

    async def _reset_failed(self, conn: DBusConnection) -> None:
        # A unit we stopped the hard way ends "failed"; it is stopped, so say STOPPED.
        # Best effort: the stop itself is confirmed already.
        facts = await self._unit_props(conn, "ActiveState")
        if facts["ActiveState"] == "failed":
            try:
                await self._call_on(conn, _MANAGER, "ResetFailedUnit", "s", (self.unit,))
            except BackendUnavailable:
                raise
            except BackendError:
                pass

    async def status(self) -> ServiceStatus:
        """The unit's state now; UNKNOWN when systemd cannot be reached."""
        try:
            conn = await self._connection()
            facts = await self._unit_props(conn, "ActiveState", "SubState")
        except BackendUnavailable:
            return ServiceStatus.UNKNOWN
        if self._latched():
            return ServiceStatus.FAILED
        return map_state(str(facts.get("ActiveState", "")), str(facts.get("SubState", "")))

    def _latched(self) -> bool:
        return self.restart_by == "hasup" and self._latched_epoch == self._op_epoch

    async def watch(self) -> AsyncGenerator[ServiceStatus, None]:
        """Yield the unit's status on every change, pushed by systemd's signals.

        A crash is yielded as FAILED at least once even when systemd restarts the unit
        at once. With ``restart_by = "hasup"`` it stays FAILED (systemd's own restart is
        not reported as RUNNING) until hasup next calls start() or stop(). While the bus
        is unreachable this yields UNKNOWN, reconnects with backoff and resynchronises.
        """
        delay = RECONNECT_MIN
        last: ServiceStatus | None = None
        while True:
            try:
                conn = await self._connection()
                with conn.subscribe(self._props_rule(), stamp=self._stamp) as changes:
                    unit = await self._get_all(conn, _UNIT_IFACE)
                    restarts = (await self._get_all(conn, _SERVICE_IFACE)).get("NRestarts", 0)
                    stamp: Any = self._stamp()
                    delay = RECONNECT_MIN
                    while True:
                        current = map_state(str(unit.get("ActiveState", "")), str(unit.get("SubState", "")))
                        if current is ServiceStatus.FAILED and not stamp[1] and stamp[0] == self._op_epoch:
                            self._latched_epoch = self._op_epoch  # a crash, not our own stop
                        if self._latched():
                            current = ServiceStatus.FAILED
                        if current is not last:
                            last = current
                            yield current
                        msg = await changes.receive()
                        stamp = changes.last_stamp
                        interface, changed, invalidated = msg.body
                        values = {name: value for name, (_sig, value) in changed.items()}
                        if interface == _UNIT_IFACE:
                            if invalidated or not {"ActiveState", "SubState"} <= values.keys():
                                values = await self._get_all(conn, _UNIT_IFACE)
                            unit.update(values)
                        elif interface == _SERVICE_IFACE and values.get("NRestarts", restarts) > restarts:
                            # systemd restarted it: a crash, even if "failed" was never seen
                            restarts = values["NRestarts"]
                            if last is not ServiceStatus.FAILED:
                                last = ServiceStatus.FAILED
                                if not stamp[1] and stamp[0] == self._op_epoch:
                                    self._latched_epoch = self._op_epoch
                                yield ServiceStatus.FAILED
            except (BackendUnavailable, DBusConnectionLost):
                if self._conn is not None and self._conn.closed:
                    await self._drop_connection()
                if last is not ServiceStatus.UNKNOWN:
                    last = ServiceStatus.UNKNOWN
                    yield ServiceStatus.UNKNOWN
                await anyio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)

    async def check(self) -> list[str]:
        """Problems for ``hasup check``: unreachable bus, missing unit, conflicting Restart=."""
        try:
            conn = await self._connection()
            facts = await self._facts(conn)
        except BackendError as exc:
            return [str(exc)]
        problems = []
        problem = self._load_problem(facts)
        if problem:
            problems.append(problem)
        restart = facts.get("Restart", "no")
        if self.restart_by == "hasup" and restart not in ("", "no"):
            problems.append(
                f"{self.unit} has Restart={restart} but restart_by = 'hasup': systemd restarts the service "
                "while hasup fails it over; set Restart=no or restart_by = 'systemd'"
            )
        if facts.get("UnitFileState") == "enabled":
            problems.append(
                f"{self.unit} is enabled, so it also starts at boot outside hasup's control: "
                f"systemctl disable {self.unit}"
            )
        return problems
