"""What the SDK check scripts share: the test registry, skips, `eq` and the runner.

A script registers its checks with `@test` (or `register(name, fn)`), then exits with
`run(banner)`, which prints one line per check and then "N passed, M failed" (", K skipped"
when some were skipped) and returns non-zero if anything failed. MEMGATE_SKIP lists checks to
leave out, comma-separated.
"""

import os
import traceback

SKIP = {s.strip() for s in os.environ.get("MEMGATE_SKIP", "").split(",") if s.strip()}
TESTS = []


class Skip(Exception):
    """Raised by a check that cannot run here; counted as skipped, not failed."""


def register(name, fn):
    TESTS.append((name, fn))


def test(fn):
    register(fn.__name__, fn)
    return fn


def eq(got, want):
    assert got == want, f"got {got!r}, want {want!r}"


def run(banner):
    passed, failed, skipped = 0, [], 0
    print(banner)
    for name, fn in TESTS:
        if name in SKIP:
            skipped += 1
            print(f"SKIP {name} (MEMGATE_SKIP)")
            continue
        try:
            fn()
        except Skip as s:
            skipped += 1
            print(f"SKIP {name} ({s})")
        except Exception:  # noqa: BLE001 - every failure is reported, then the run goes on
            failed.append((name, traceback.format_exc()))
            print(f"FAIL {name}")
        else:
            passed += 1
            print(f"ok   {name}")
    for name, tb in failed:
        print(f"\n--- {name}\n{tb}", end="")
    tail = f", {skipped} skipped" if skipped else ""
    print(f"\n{passed} passed, {len(failed)} failed{tail}")
    return 1 if failed else 0
