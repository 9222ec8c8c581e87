"""One driver per study: a claim on an Optuna study name, kept in the Optuna storage itself.

Two ``fairsearch run`` drivers of one study (the same name in one database, such as a PostgreSQL server
that several machines share) would both ask Optuna for trials and both write the results folder. So a
driver claims the study (:func:`claim_study`) once its inputs are checked and before it writes anything,
and a second driver is refused while the first is alive (:class:`StudyClaimedError`, exit 2). The claim
is given up at the end of the sweep (:meth:`StudyClaim.release`). A driver killed outright stops
refreshing it: its claim is taken over once its heartbeat is older than ``stale_after_s`` (60 s), and at
once when it ran on this machine and its process is gone, so the same command resumes a killed sweep.

How a claim is stored. A claim is an empty Optuna study named ``.driver/<study>/<generation>`` (a sweep's
name never starts with a dot nor holds a slash, so it is never a sweep's study) whose user attribute
``holder`` names the driver: host, process, a random token and the time of its last heartbeat, which a
daemon thread refreshes every ``heartbeat_s`` (15 s). The newest generation is the claim in force.

Why two drivers never both hold a claim. Creating a study is the one atomic step: the database's unique
constraint on study names lets exactly one ``create_new_study`` of a name succeed, the others raise
``DuplicatedStudyError``. A driver

1. reads the newest generation ``g`` (``-1`` when none) and refuses if its holder is alive (a generation
   without a holder yet is waited for: its creator is at step 3);
2. creates generation ``g + 1``, or on ``DuplicatedStudyError`` (another driver was first) starts again;
3. writes its holder, then lists the generations again: one newer than ``g + 1`` means it read a state
   that others had moved past, so it deletes ``g + 1`` and starts again;
4. deletes the generations older than its own.

A generation is deleted only while a newer one exists (steps 3 and 4), so the newest one never is, and
once a generation above ``k`` exists one always will. Let A win generation ``a``: at its re-read (step 3)
no generation above ``a`` existed, so none had before. A later one needs ``a + 1`` first, made by a
driver that read ``a`` as the newest at step 1. That ``a`` was A's own (an earlier ``a`` could only have
gone while a newer generation existed, which would be there still), so that driver saw A's holder alive,
at once or after waiting for it, and refused. So while A's claim is alive no other driver even creates a
newer generation; A's claim ends only when A releases it or its heartbeat goes stale.

Staleness compares the wall clocks of different machines: they must agree to well within
``stale_after_s - heartbeat_s`` (NTP does). A driver whose claim was taken over all the same (its
heartbeats stalled for a minute) logs an error at its next heartbeat.

Only Optuna's public storage API is used, so any Optuna storage (SQLite, PostgreSQL, MySQL) works.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, RDBStorage
from optuna.study import StudyDirection

from fairsearch.errors import FairsearchError, clip_value

logger = logging.getLogger(__name__)

CLAIM_PREFIX = ".driver/"
"""Claims are studies named ``.driver/<study>/<generation>``."""
HEARTBEAT_S = 15.0
"""How often a driver refreshes its claim."""
STALE_AFTER_S = 60.0
"""A claim whose last heartbeat is older than this is taken over (its driver is gone)."""
_HOLDER_KEY = "holder"
_MAX_ROUNDS = 20
_SCHEMA_ATTEMPTS = 5


class StudyClaimedError(FairsearchError):
    """Another driver, alive, holds the study."""


@dataclass(frozen=True)
class Holder:
    """The driver that holds a claim, as stored in the claim's ``holder`` attribute.

    Attributes:
        host: the driver's host name.
        pid: the driver's process id.
        machine: host name, boot id and PID namespace: equal only for processes of one running system
            that see each other's pids (``""`` when unknown); then ``pid`` and ``process_start`` tell
            whether the driver still runs.
        process_start: the driver process's start time in clock ticks since boot (``-1`` unknown).
        token: random, one per claim.
        started: when the claim was made (seconds since the epoch).
        heartbeat: the claim's last heartbeat (seconds since the epoch).
        released: the driver gave the claim up.
    """

    host: str
    pid: int
    machine: str
    process_start: int
    token: str
    started: float
    heartbeat: float
    released: bool = False

    @classmethod
    def from_attr(cls, value: Any) -> Holder | None:
        """The holder of a stored attribute; ``None`` when there is none (not written yet).

        A record that is there but damaged (a field missing, of the wrong type, not finite) is a
        released holder, logged as a warning: its driver cannot be told alive, and a damaged record
        must not keep every later driver out.
        """
        if value is None:
            return None
        fields = _HOLDER_FIELDS
        if not (
            isinstance(value, dict)
            and set(fields) - {"released"} <= set(value) <= set(fields)
            and all(_is_a(value[name], fields[name]) for name in value)
        ):
            logger.warning(
                "a claim record of this study is damaged (%s): treated as released", clip_value(value, 120)
            )
            return cls("?", -1, "", -1, "", 0.0, 0.0, released=True)
        typed: dict[str, Any] = {k: (int(v) if fields[k] is int else v) for k, v in value.items()}
        return cls(**typed)

    def describe(self, now: float) -> str:
        """``pid 123 on host-a, claimed 2026-01-01 10:00:00, last heartbeat 5 s ago``."""
        started = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        return f"pid {self.pid} on {self.host}, claimed {started}, last heartbeat {max(now - self.heartbeat, 0):.0f} s ago"


_HOLDER_FIELDS: dict[str, type] = {
    "host": str,
    "pid": int,
    "machine": str,
    "process_start": int,
    "token": str,
}
_HOLDER_FIELDS |= {"started": float, "heartbeat": float, "released": bool}


def _is_a(value: Any, kind: type) -> bool:
    """A claim record's field as :class:`Holder` types it: an ``int`` or ``float`` field a finite number
    (an ``int`` one whole), never a bool."""
    if kind in (str, bool):
        return isinstance(value, kind)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return kind is float or float(value).is_integer()


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> int:
    """A process's start time in clock ticks since boot from ``/proc/<pid>/stat`` (``-1``: none, or a
    zombie: killed, not yet reaped)."""
    stat = _read_text(f"/proc/{pid}/stat")
    fields = stat.rpartition(")")[2].split()
    if len(fields) < 20 or fields[0] == "Z":
        return -1
    return int(fields[19])


def _machine() -> str:
    """``host|boot id|pid namespace``, or ``""`` where ``/proc`` does not tell (then a claim of a killed
    driver is taken over only once stale)."""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}|{boot}|{namespace}" if boot and namespace else ""


def _this_driver(token: str, now: float) -> Holder:
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        machine=_machine(),
        process_start=_process_start(os.getpid()),
        token=token,
        started=now,
        heartbeat=now,
    )


def is_gone(holder: Holder, now: float, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether a claim's driver is gone: it released the claim, its heartbeat is older than
    ``stale_after_s``, or it ran on this machine and its process no longer runs."""
    if holder.released or now - holder.heartbeat > stale_after_s:
        return True
    if not holder.machine or holder.machine != _machine():
        return False
    start = _process_start(holder.pid)
    return holder.process_start >= 0 and start != holder.process_start


def _generations(storage: BaseStorage, study_name: str) -> dict[int, Holder | None]:
    """The claim generations of ``study_name`` and their holders (``None``: not written yet), in one
    read of the storage."""
    prefix = f"{CLAIM_PREFIX}{study_name}/"
    found = {}
    for study in storage.get_all_studies():
        rest = study.study_name.removeprefix(prefix)
        if rest != study.study_name and rest.isdigit():
            found[int(rest)] = Holder.from_attr(study.user_attrs.get(_HOLDER_KEY))
    return found


def _claim_name(study_name: str, generation: int) -> str:
    return f"{CLAIM_PREFIX}{study_name}/{generation}"


def claim_holder(storage: BaseStorage, study_name: str) -> Holder | None:
    """The holder of the claim in force on ``study_name`` (released or not); ``None`` if none."""
    generations = _generations(storage, study_name)
    return generations[max(generations)] if generations else None


@contextlib.contextmanager
def _quiet_optuna() -> Any:
    """Optuna logs every study it creates; a claim is not news."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _acquire(
    storage: BaseStorage, study_name: str, token: str, where: str, stale_after_s: float
) -> tuple[int, Holder]:
    """Steps 1-4 of the module's protocol; returns the generation won and its holder.

    Raises:
        StudyClaimedError: the claim in force is alive, or other drivers kept winning the race.
    """
    unwritten: tuple[int, float] | None = None  # a generation seen without a holder, since when
    lost = 0  # races lost at steps 2 and 3
    while lost < _MAX_ROUNDS:
        generations = _generations(storage, study_name)
        newest = max(generations, default=-1)
        holder = generations.get(newest)
        if newest >= 0 and holder is None:  # its creator is between steps 2 and 3, or died there
            if unwritten is None or unwritten[0] != newest:
                unwritten = (newest, time.monotonic())
            if time.monotonic() - unwritten[1] < stale_after_s:
                time.sleep(0.2)
                continue
        elif holder is not None and not is_gone(holder, time.time(), stale_after_s):
            raise StudyClaimedError(
                f"study {study_name!r} in {where} is being run by another driver ({holder.describe(time.time())}): "
                "two drivers of one study would both ask it for trials and both write the results. Wait "
                "for it to end or stop it, or give --name for a sweep beside it; a driver killed outright "
                f"gives up the study {stale_after_s:.0f} s after its last heartbeat"
            )
        generation = newest + 1
        try:
            with _quiet_optuna():
                study_id = storage.create_new_study(
                    [StudyDirection.MINIMIZE], _claim_name(study_name, generation)
                )
        except DuplicatedStudyError:  # another driver created it first
            lost += 1
            continue
        mine = _this_driver(token, time.time())
        storage.set_study_user_attr(study_id, _HOLDER_KEY, asdict(mine))
        after = _generations(storage, study_name)
        if max(after) > generation:  # others moved past the state read at step 1
            with contextlib.suppress(KeyError):
                storage.delete_study(study_id)
            lost += 1
            continue
        for older in after:
            if older < generation:
                with contextlib.suppress(KeyError):
                    storage.delete_study(storage.get_study_id_from_name(_claim_name(study_name, older)))
        return generation, mine
    raise StudyClaimedError(
        f"study {study_name!r} in {where}: other drivers kept claiming it while this one tried "
        f"{_MAX_ROUNDS} times; run one driver per study"
    )


def _storage(url: str) -> RDBStorage:
    """The storage of ``url``; a SQLite file's folder is made first (the default one lives in the results
    folder, which a new sweep has not made yet). Optuna makes a new database's tables on first use, and
    drivers that start together race at that: the losers try again and find the tables made."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not database.startswith("file:")
    ):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return RDBStorage(url)
        except SQLAlchemyError:  # drivers making a new database's tables at once: one wins, the rest see them
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


class StudyClaim:
    """This driver's claim on a study, refreshed by a daemon thread until :meth:`release`.

    Attributes:
        study_name: the study claimed.
        generation: the claim's generation (the claim is the study ``.driver/<study_name>/<generation>``).
        lost: another driver took the study over (this one's heartbeats had stalled for
            ``stale_after_s``).
    """

    def __init__(
        self,
        url: str,
        study_name: str,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        from sqlalchemy.engine import make_url

        self.study_name = study_name
        self.generation = -1
        self.lost = False
        self._url = url
        self._where = make_url(url).render_as_string(hide_password=True)
        self._heartbeat_s = heartbeat_s
        self._stale_after_s = stale_after_s
        self._token = secrets.token_hex(8)
        self._holder: Holder | None = None
        self._storage = _storage(url)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"claim on {study_name}", daemon=True)

    @property
    def holder(self) -> Holder | None:
        """This driver, as its claim stores it."""
        return self._holder

    def acquire(self) -> StudyClaim:
        """Claims the study and starts the heartbeat.

        Raises:
            StudyClaimedError: another driver, alive, holds it.
        """
        with self._lock:
            self.generation, self._holder = _acquire(
                self._storage, self.study_name, self._token, self._where, self._stale_after_s
            )
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            if not self.heartbeat():
                return

    def heartbeat(self) -> bool:
        """Refreshes the claim's heartbeat; returns False once the claim is released or lost."""
        with self._lock:
            if self._holder is None or self._holder.released or self.lost:
                return False
            try:
                generations = _generations(self._storage, self.study_name)
                if not generations:  # the database was removed (--restart), until renew() claims again
                    logger.warning("study %r: this driver's claim is not in the database", self.study_name)
                    return True
                stored = generations.get(self.generation)
                if stored is None or stored.token != self._token or max(generations) > self.generation:
                    self.lost = True
                    newest = generations[max(generations)]
                    logger.error(
                        "study %r: another driver has taken it over (%s) after this driver's heartbeats "
                        "stalled; stop this driver, or the two of them ask for trials of one study",
                        self.study_name,
                        newest.describe(time.time()) if newest else "its claim is being written",
                    )
                    return False
                self._holder = Holder(**{**asdict(self._holder), "heartbeat": time.time()})
                self._write()
            except Exception as err:  # a database that is away for a moment: the next beat tries again
                logger.warning("study %r: could not refresh this driver's claim (%s)", self.study_name, err)
            return True

    def _write(self) -> None:
        assert self._holder is not None  # written only once acquired
        study_id = self._storage.get_study_id_from_name(_claim_name(self.study_name, self.generation))
        self._storage.set_study_user_attr(study_id, _HOLDER_KEY, asdict(self._holder))

    def renew(self) -> None:
        """Holds the claim again after its database was removed and made anew (``--restart`` removes the
        results folder, which holds the default SQLite database).

        Raises:
            StudyClaimedError: another driver claimed the study in the meantime.
        """
        with self._lock:
            self._storage.engine.dispose()  # its pooled connections may hold the removed file
            self._storage = _storage(self._url)
            stored = _generations(self._storage, self.study_name).get(self.generation)
            if stored is None or stored.token != self._token:
                self.generation, self._holder = _acquire(
                    self._storage, self.study_name, self._token, self._where, self._stale_after_s
                )
            self.lost = False  # a heartbeat between the removal and now found no claim
        if not self._thread.is_alive():
            self._thread = threading.Thread(target=self._beat, name=self._thread.name, daemon=True)
            self._thread.start()

    def release(self) -> None:
        """Gives the claim up (a no-op once released or lost): the next driver of the study starts at once."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        with self._lock:
            _HELD.pop(id(self), None)
            if self._holder is None or self._holder.released or self.lost:
                return
            self._holder = Holder(**{**asdict(self._holder), "released": True, "heartbeat": time.time()})
            try:
                stored = _generations(self._storage, self.study_name).get(self.generation)
                if stored is not None and stored.token == self._token:
                    self._write()
            except Exception as err:  # the claim then lapses STALE_AFTER_S after its last heartbeat
                logger.warning("study %r: could not release this driver's claim (%s)", self.study_name, err)

    def __enter__(self) -> StudyClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_HELD: dict[int, StudyClaim] = {}
"""This process's claims not yet released, given up when it exits."""


@atexit.register
def _release_held() -> None:
    for claim in list(_HELD.values()):
        claim.release()


def claim_study(
    url: str,
    study_name: str,
    *,
    heartbeat_s: float = HEARTBEAT_S,
    stale_after_s: float = STALE_AFTER_S,
) -> StudyClaim:
    """Claims ``study_name`` in the Optuna storage at ``url`` for this driver (see the module's protocol).

    The claim is refreshed every ``heartbeat_s`` by a daemon thread and given up by
    :meth:`StudyClaim.release`, or when this process exits. A claim this process holds on the same study
    (one a sweep that raised did not release) is released first.

    Args:
        url: the Optuna storage URL (SQLite, PostgreSQL, MySQL).
        study_name: the study a sweep runs.
        heartbeat_s: seconds between heartbeats.
        stale_after_s: a claim whose heartbeat is older is taken over.

    Returns:
        The claim, held.

    Raises:
        StudyClaimedError: another driver, alive, holds the study (the message names it).
    """
    for earlier in [c for c in _HELD.values() if (c._url, c.study_name) == (url, study_name)]:
        earlier.release()  # this process's own, left by a sweep that raised: the last call wins
    claim = StudyClaim(url, study_name, heartbeat_s=heartbeat_s, stale_after_s=stale_after_s).acquire()
    _HELD[id(claim)] = claim
    return claim
