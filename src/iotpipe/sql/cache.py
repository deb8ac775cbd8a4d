"""The local cache of archive objects behind ``iotpipe sql --engine duckdb``: kept bounded, pruned safely.

Layout (``iotpipe.sql.cache_path``): ``<cache>/<bucket>/<key without .jsonl.gz>.<ETag>.jsonl.gz``, with the parsed
(Parquet) form beside each object in ``<file>.records/`` and ``<file>.entries-v2/``. A rewritten object has a new ETag,
so a new file; the file of its old ETag is *superseded*.

The cache is private: its folder is 0700 (made so on every query), and what iotpipe writes in it is 0600 in 0700
folders, since the objects and their parsed forms hold the devices' raw payloads.

Pruning removes superseded versions, entries unused for ``max_age_days`` and, least recently used first, entries
beyond ``max_bytes``; never an entry of the running query's window (``keep``). A query holds a shared lock on
``<cache>/.lock`` from listing to its last row; pruning and clearing take the lock exclusively without waiting, so
they never delete a file another running query may still read: when another query holds the cache, pruning is left
to a later run and clearing is refused. (Where ``fcntl`` is missing, i.e. Windows, there is no lock: Windows refuses
to delete a file that is open, and such a file is skipped.)
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from iotpipe.errors import ConfigError, IotpipeError

MB = 1024 * 1024
DAY_S = 86_400
DEFAULT_MAX_MB = 2048
DEFAULT_MAX_AGE_DAYS = 30
LOCK_NAME = ".lock"
PRUNED_STAMP = ".pruned"
PRUNE_INTERVAL_S = 3600
OBJECT_SUFFIX = ".jsonl.gz"
RECORDS_KIND = "records"
# The readings' parsed form; "entries" (before the samples form and sample_index) is an earlier iotpipe's, never
# read again: a leftover that pruning removes.
ENTRIES_KIND = "entries-v2"
PARSED_KINDS = (RECORDS_KIND, ENTRIES_KIND)
STALE_PARSED_KINDS = ("entries",)
STAGING_PREFIX = ".iotpipe-parse-"
PART_MARK = ".part"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class CacheBusyError(IotpipeError):
    """Another ``iotpipe sql`` is using the cache, so it cannot be cleared now."""


@dataclass(frozen=True)
class CacheLimits:
    """How much the cache may hold: at most ``max_bytes``, nothing unused for more than ``max_age_days``."""

    max_bytes: int = DEFAULT_MAX_MB * MB
    max_age_days: int = DEFAULT_MAX_AGE_DAYS

    def __post_init__(self) -> None:
        if self.max_bytes < MB:
            raise ConfigError(f"cache max_bytes {self.max_bytes} is below 1 MB; give at least 1 MB")
        if self.max_age_days < 1:
            raise ConfigError(f"cache max_age_days {self.max_age_days} is below 1; give at least 1 day")


@dataclass(frozen=True)
class CacheEntry:
    """One cached archive object with its parsed form: ``version_of`` names the key (same for every ETag)."""

    path: Path
    version_of: str
    size: int
    last_used: float


@dataclass(frozen=True)
class PruneReport:
    """What pruning (or clearing) removed and what the cache still holds."""

    removed: int = 0
    removed_bytes: int = 0
    superseded: int = 0
    kept: int = 0
    kept_bytes: int = 0
    skipped: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON values."""
        return {"removed": self.removed, "removed_bytes": self.removed_bytes, "superseded": self.superseded,
                "kept": self.kept, "kept_bytes": self.kept_bytes, "skipped": self.skipped}


# --- locking ---------------------------------------------------------------------------------------------


def make_private(cache_dir: Path) -> None:
    """Create the cache folder readable by its owner only, and make an existing one so: it holds the archive's raw
    payloads (an earlier iotpipe made it 0755, so this also closes those)."""
    cache_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    if cache_dir.stat().st_mode & 0o777 != PRIVATE_DIR:
        cache_dir.chmod(PRIVATE_DIR)


def private_folder(path: Path) -> None:
    """Create ``path`` and any missing parent as 0700 folders (``mkdir(parents=True)`` makes parents 0755)."""
    for folder in reversed([path, *path.parents]):
        with suppress(FileExistsError):
            folder.mkdir(mode=PRIVATE_DIR)


def make_tree_private(path: Path) -> None:
    """Folders 0700 and files 0600 under ``path`` (what DuckDB writes follows the umask)."""
    path.chmod(PRIVATE_DIR if path.is_dir() else PRIVATE_FILE)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), PRIVATE_DIR)
        for name in files:
            os.chmod(os.path.join(root, name), PRIVATE_FILE)


def _open_lock(cache_dir: Path) -> IO[bytes]:
    make_private(cache_dir)
    return os.fdopen(os.open(cache_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_APPEND, PRIVATE_FILE), "a+b")


@contextmanager
def cache_in_use(cache_dir: Path) -> Iterator[None]:
    """Hold the cache for a query (shared with other queries): nothing the query reads is pruned meanwhile."""
    handle = _open_lock(cache_dir)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock (see the module docstring)
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
        yield
    finally:
        handle.close()  # closing releases the lock


@contextmanager
def _exclusive(cache_dir: Path) -> Iterator[bool]:
    """True while no query holds the cache (the caller may delete), False when one does (it must not)."""
    handle = _open_lock(cache_dir)
    try:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield True
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


def mark_used(paths: Iterable[Path], now: float | None = None) -> None:
    """Stamp cached objects as used now (their mtime is the cache's last-use time)."""
    moment = time.time() if now is None else now
    for path in paths:
        with suppress(FileNotFoundError):
            os.utime(path, (moment, moment))


# --- scanning and planning (pure) ------------------------------------------------------------------------


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _version_of(relative: str) -> str | None:
    """``bucket/raw/.../1-9`` of ``bucket/raw/.../1-9.<etag>.jsonl.gz`` (the ETag is sanitised: no dots)."""
    if not relative.endswith(OBJECT_SUFFIX):
        return None
    stem, dot, _etag = relative[: -len(OBJECT_SUFFIX)].rpartition(".")
    return stem if dot and stem else None


def scan_cache(cache_dir: Path) -> tuple[list[CacheEntry], list[Path]]:
    """The cache's entries, and its leftovers: partial downloads, parse staging folders and parsed forms whose
    object is gone (what a killed query leaves behind)."""
    entries: list[CacheEntry] = []
    leftovers: list[Path] = []
    parsed: dict[Path, int] = {}
    if not cache_dir.is_dir():
        return entries, leftovers
    for root, dirs, files in os.walk(cache_dir):
        base = Path(root)
        for name in list(dirs):
            path = base / name
            if name.startswith(STAGING_PREFIX) or any(name.endswith(f"{OBJECT_SUFFIX}.{kind}")
                                                      for kind in STALE_PARSED_KINDS):
                leftovers.append(path)
                dirs.remove(name)
            elif any(name.endswith(f"{OBJECT_SUFFIX}.{kind}") for kind in PARSED_KINDS):
                parsed[path] = _tree_size(path)
                dirs.remove(name)
        for name in files:
            path = base / name
            if base == cache_dir and name in (LOCK_NAME, PRUNED_STAMP):
                continue
            if f"{OBJECT_SUFFIX}{PART_MARK}" in name:
                leftovers.append(path)
                continue
            version_of = _version_of(path.relative_to(cache_dir).as_posix())
            if version_of is None:
                continue  # not ours: never deleted by pruning
            stat = path.stat()
            size = stat.st_size + sum(parsed.pop(path.with_name(f"{name}.{kind}"), 0) for kind in PARSED_KINDS)
            entries.append(CacheEntry(path, version_of, size, stat.st_mtime))
    leftovers.extend(parsed)  # os.walk lists a folder's files and sub-folders together: these have no object
    return entries, leftovers


def plan_prune(entries: Iterable[CacheEntry], limits: CacheLimits, keep: Iterable[Path],
               now: float) -> tuple[list[CacheEntry], int]:
    """(entries to remove, how many of them are superseded versions): every version of a key but its most
    recently used one, then entries unused for ``max_age_days``, then the least recently used until the rest fit
    in ``max_bytes``. Entries in ``keep`` (the running query's window) are never removed."""
    kept_paths = set(keep)
    latest: dict[str, CacheEntry] = {}
    for entry in entries:
        current = latest.get(entry.version_of)
        if current is None or (entry.path in kept_paths, entry.last_used) > (current.path in kept_paths,
                                                                             current.last_used):
            latest[entry.version_of] = entry
    superseded = [e for e in entries if latest[e.version_of] is not e and e.path not in kept_paths]
    gone = {e.path for e in superseded}
    oldest_allowed = now - limits.max_age_days * DAY_S
    expired = [e for e in entries if e.path not in gone and e.path not in kept_paths and e.last_used < oldest_allowed]
    gone |= {e.path for e in expired}
    remaining = sorted((e for e in entries if e.path not in gone), key=lambda e: e.last_used)
    total = sum(e.size for e in remaining)
    evicted = []
    for entry in remaining:
        if total <= limits.max_bytes:
            break
        if entry.path in kept_paths:
            continue
        evicted.append(entry)
        total -= entry.size
    return superseded + expired + evicted, len(superseded)


# --- removing --------------------------------------------------------------------------------------------


def _remove_entry(entry: CacheEntry) -> bool:
    """Remove the object, then its parsed form; False when the platform refused (a file open elsewhere)."""
    try:
        entry.path.unlink(missing_ok=True)
        for kind in PARSED_KINDS:
            shutil.rmtree(entry.path.with_name(f"{entry.path.name}.{kind}"), ignore_errors=True)
    except OSError:
        return False
    return True


def _remove_leftover(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_empty_folders(cache_dir: Path, removed: Iterable[Path]) -> None:
    """The folders that held removed paths, and their parents, while they are empty (up to the cache)."""
    for folder in sorted({path.parent for path in removed}, key=lambda p: len(p.parts), reverse=True):
        while folder != cache_dir and cache_dir in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone already)
                break
            folder = folder.parent


def _recent_stamp(stamp: Path, bounds: str, now: float) -> bool:
    try:
        return now - stamp.stat().st_mtime < PRUNE_INTERVAL_S and stamp.read_text() == bounds
    except OSError:
        return False


def prune_cache(cache_dir: Path, limits: CacheLimits, keep: Iterable[Path] = (), now: float | None = None,
                added: bool = True) -> PruneReport:
    """Remove superseded versions, expired and least recently used entries beyond ``limits`` (never ``keep``),
    and what killed queries left behind. Skipped (``skipped=True``, nothing removed) while another query holds the
    cache: it may be reading any of them.

    The cache grows and gains versions only by downloads, and ages by days: a run that ``added`` nothing scans the
    cache at most once per ``PRUNE_INTERVAL_S`` (a scan of 2,000 objects is a noticeable part of a warm query)."""
    if not cache_dir.is_dir():
        return PruneReport()
    moment = time.time() if now is None else now
    stamp, bounds = cache_dir / PRUNED_STAMP, f"{limits.max_bytes} {limits.max_age_days}"
    if not added and _recent_stamp(stamp, bounds, moment):
        return PruneReport()
    with _exclusive(cache_dir) as alone:
        if not alone:
            return PruneReport(skipped=True)
        entries, leftovers = scan_cache(cache_dir)
        doomed, superseded = plan_prune(entries, limits, keep, moment)
        removed = [entry for entry in doomed if _remove_entry(entry)]
        for path in leftovers:
            _remove_leftover(path)
        _remove_empty_folders(cache_dir, [*(e.path for e in removed), *leftovers])
        stamp.touch(mode=PRIVATE_FILE)
        stamp.write_text(bounds)  # tighter bounds than the last prune's take effect on the next query
        os.utime(stamp, (moment, moment))
    gone = {entry.path for entry in removed}
    kept = [entry for entry in entries if entry.path not in gone]
    return PruneReport(removed=len(removed), removed_bytes=sum(e.size for e in removed),
                       superseded=min(superseded, len(removed)), kept=len(kept),
                       kept_bytes=sum(e.size for e in kept))


def clear_cache(cache_dir: Path) -> PruneReport:
    """Remove every cached object, its parsed form and any leftover; CacheBusyError while a query uses the cache."""
    if not cache_dir.is_dir():
        return PruneReport()
    with _exclusive(cache_dir) as alone:
        if not alone:
            raise CacheBusyError(f"another iotpipe sql is using the cache in {cache_dir}; clear it when that "
                                 "query has finished")
        entries, leftovers = scan_cache(cache_dir)
        removed = [entry for entry in entries if _remove_entry(entry)]
        for path in leftovers:
            _remove_leftover(path)
        _remove_empty_folders(cache_dir, [*(e.path for e in removed), *leftovers])
    gone = {entry.path for entry in removed}
    kept = [entry for entry in entries if entry.path not in gone]
    return PruneReport(removed=len(removed), removed_bytes=sum(e.size for e in removed), kept=len(kept),
                       kept_bytes=sum(e.size for e in kept))
