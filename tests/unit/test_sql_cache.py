"""The DuckDB archive cache stays bounded and is pruned safely: superseded ETag versions go, entries unused too long
go, the least recently used go beyond the size bound, the running query's window never goes, nothing goes while
another query holds the cache, and a clear removes everything (or refuses while a query runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iotpipe.errors import ConfigError
from iotpipe.sql.cache import (
    DAY_S,
    ENTRIES_KIND,
    MB,
    RECORDS_KIND,
    CacheBusyError,
    CacheEntry,
    CacheLimits,
    cache_in_use,
    clear_cache,
    plan_prune,
    prune_cache,
    scan_cache,
)

NOW = 1_800_000_000.0
KEY = "bucket/raw/year=2026/month=03/day=01/hour=10/shardId-000000000000/1-9"


def cached(cache: Path, stem: str, etag: str, size: int, last_used: float, parsed: bool = True) -> Path:
    """A cached object of ``size`` bytes (half in the object, half in its parsed form) used at ``last_used``."""
    path = cache / f"{stem}.{etag}.jsonl.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * (size // 2 if parsed else size))
    if parsed:
        for kind, part in ((RECORDS_KIND, size // 4), (ENTRIES_KIND, size - size // 2 - size // 4)):
            folder = path.with_name(f"{path.name}.{kind}")
            folder.mkdir()
            (folder / "data_0.parquet").write_bytes(b"p" * part)
    os.utime(path, (last_used, last_used))
    return path


def entry(name: str, version_of: str, size: int, age_days: float) -> CacheEntry:
    return CacheEntry(Path(name), version_of, size, NOW - age_days * DAY_S)


# --- the plan -------------------------------------------------------------------------------------------


def test_every_version_but_the_latest_used_of_a_key_is_superseded() -> None:
    old, new, other = entry("k.a", "k", 10, 2), entry("k.b", "k", 10, 1), entry("j.a", "j", 10, 3)
    doomed, superseded = plan_prune([old, new, other], CacheLimits(), keep=(), now=NOW)
    assert (doomed, superseded) == ([old], 1)


def test_the_running_windows_version_is_kept_even_when_another_was_used_later() -> None:
    ours, theirs = entry("k.a", "k", 10, 2), entry("k.b", "k", 10, 1)
    doomed, _ = plan_prune([ours, theirs], CacheLimits(), keep=[ours.path], now=NOW)
    assert doomed == [theirs]


def test_entries_unused_longer_than_the_age_bound_go_unless_in_the_window() -> None:
    fresh, stale, stale_in_window = entry("a", "a", 1, 29), entry("b", "b", 1, 31), entry("c", "c", 1, 40)
    doomed, _ = plan_prune([fresh, stale, stale_in_window], CacheLimits(max_age_days=30), keep=[Path("c")],
                           now=NOW)
    assert doomed == [stale]


def test_least_recently_used_go_until_the_rest_fits_and_the_window_always_stays() -> None:
    entries = [entry("a", "a", 3 * MB, 5), entry("b", "b", 3 * MB, 4), entry("c", "c", 3 * MB, 3),
               entry("d", "d", 3 * MB, 2)]
    doomed, _ = plan_prune(entries, CacheLimits(max_bytes=7 * MB), keep=(), now=NOW)
    assert [e.path.name for e in doomed] == ["a", "b"]
    # the window alone is over the bound: everything else goes, the window stays
    doomed, _ = plan_prune(entries, CacheLimits(max_bytes=1 * MB), keep=[Path("a"), Path("d")], now=NOW)
    assert [e.path.name for e in doomed] == ["b", "c"]


@pytest.mark.parametrize("limits", [{"max_bytes": 1000}, {"max_age_days": 0}])
def test_bounds_below_the_minimum_are_config_errors(limits: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match="give at least 1"):
        CacheLimits(**limits)


# --- the cache on disk ----------------------------------------------------------------------------------


def test_scan_counts_the_parsed_form_and_finds_what_killed_queries_left(tmp_path: Path) -> None:
    path = cached(tmp_path, KEY, "etag1", 1000, NOW)
    partial = path.with_name(path.name + ".part-x1y2")
    partial.write_bytes(b"half")
    staging = path.parent / ".iotpipe-parse-abc"
    staging.mkdir()
    orphan = path.with_name(f"2-3.gone.jsonl.gz.{ENTRIES_KIND}")
    orphan.mkdir()
    stale = path.with_name(f"{path.name}.entries")  # an earlier iotpipe's parsed form, never read again
    stale.mkdir()
    (stale / "data_0.parquet").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("not ours")

    entries, leftovers = scan_cache(tmp_path)

    assert entries == [CacheEntry(path, KEY, 1000, NOW)]
    assert sorted(leftovers) == sorted([partial, staging, orphan, stale])


def test_prune_removes_superseded_expired_and_leftovers_and_keeps_the_rest(tmp_path: Path) -> None:
    old = cached(tmp_path, KEY, "etag1", 1000, NOW - 3600)
    new = cached(tmp_path, KEY, "etag2", 1000, NOW - 60)
    expired = cached(tmp_path, "bucket/raw/year=2026/month=01/day=01/hour=00/s/1-1", "e", 500, NOW - 31 * DAY_S)
    kept = cached(tmp_path, "bucket/quarantine/year=2026/month=03/day=01/hour=10/s/1-9", "q", 200, NOW - 60,
                  parsed=False)
    new.with_name(new.name + ".part-1").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("not ours")

    report = prune_cache(tmp_path, CacheLimits(max_age_days=30), keep=[new, kept], now=NOW)

    assert (report.removed, report.superseded, report.removed_bytes) == (2, 1, 1500)
    assert (report.kept, report.kept_bytes, report.skipped) == (2, 1200, False)
    assert not old.exists() and not old.with_name(f"{old.name}.{ENTRIES_KIND}").exists()
    assert new.exists() and new.with_name(new.name + ".records").is_dir()
    assert kept.exists() and not expired.exists()
    assert not expired.parent.exists()  # emptied folders go too
    assert sorted(p.name for p in new.parent.iterdir()) == sorted([new.name, f"{new.name}.records",
                                                                   f"{new.name}.{ENTRIES_KIND}"])
    assert (tmp_path / "notes.txt").exists()


def test_nothing_is_pruned_or_cleared_while_another_query_holds_the_cache(tmp_path: Path) -> None:
    old = cached(tmp_path, KEY, "etag1", 1000, NOW - 3600)
    cached(tmp_path, KEY, "etag2", 1000, NOW - 60)

    with cache_in_use(tmp_path):  # another query, between its listing and its last row
        report = prune_cache(tmp_path, CacheLimits(), now=NOW)
        with pytest.raises(CacheBusyError, match="another iotpipe sql is using the cache"):
            clear_cache(tmp_path)
        assert report.skipped and report.removed == 0 and old.exists()

    assert prune_cache(tmp_path, CacheLimits(), now=NOW).superseded == 1
    assert not old.exists()


def test_queries_share_the_cache_with_each_other(tmp_path: Path) -> None:
    with cache_in_use(tmp_path), cache_in_use(tmp_path):
        assert (tmp_path / ".lock").exists()


def test_clear_removes_every_object_and_keeps_what_is_not_ours(tmp_path: Path) -> None:
    cached(tmp_path, KEY, "etag1", 1000, NOW)
    cached(tmp_path, "bucket/raw/year=2026/month=01/day=01/hour=00/s/1-1", "e", 500, NOW, parsed=False)
    (tmp_path / "notes.txt").write_text("not ours")

    report = clear_cache(tmp_path)

    assert (report.removed, report.removed_bytes, report.kept) == (2, 1500, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "notes.txt"]
    assert clear_cache(tmp_path / "never-made").removed == 0


def test_a_run_that_fetched_nothing_scans_at_most_hourly_unless_the_bounds_changed(tmp_path: Path) -> None:
    assert prune_cache(tmp_path / "none", CacheLimits(), now=NOW).removed == 0  # no cache yet: nothing to do
    cached(tmp_path, "bucket/other", "e", 10, NOW - 60)
    prune_cache(tmp_path, CacheLimits(), now=NOW)  # a run that downloaded: scans, stamps
    old = cached(tmp_path, KEY, "etag1", 1000, NOW - 3600)
    cached(tmp_path, KEY, "etag2", 1000, NOW - 60)

    assert prune_cache(tmp_path, CacheLimits(), now=NOW + 60, added=False).removed == 0 and old.exists()
    assert prune_cache(tmp_path, CacheLimits(max_age_days=7), now=NOW + 60, added=False).superseded == 1
    assert not old.exists()
    stale = cached(tmp_path, KEY, "etag0", 1000, NOW - 7200)
    assert prune_cache(tmp_path, CacheLimits(max_age_days=7), now=NOW + 3700, added=False).removed == 1
    assert not stale.exists()
