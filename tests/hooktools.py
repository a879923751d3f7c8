"""A hook for the tests: a program that records its arguments and environment, and can fail, wait or print a lot."""

from __future__ import annotations

import json
import os
import stat
import sys

_SCRIPT = '''#!{python}
import json, os, sys
record = {{"argv": sys.argv[1:], "id": os.environ.get("RADX_HOOK_ID"), "kind": os.environ.get("RADX_HOOK")}}
with open({record!r}, "a") as out:
    out.write(json.dumps(record) + "\\n")
    out.flush()
    os.fsync(out.fileno())
behaviour = os.environ.get("RADX_TEST_HOOK", "")
if behaviour.startswith("wait:") and os.path.exists(behaviour[5:]):
    with open(behaviour[5:]) as fifo:
        fifo.read()
if behaviour == "hang":
    import time
    while True:
        time.sleep(60)
if behaviour == "chatter":
    sys.stdout.write(("x" * 5000 + "\\n") * 2 + "".join("line %d\\n" % n for n in range(1000)))
    sys.stdout.write("y" * 100000)
    sys.stderr.write("to stderr\\n")
if behaviour == "fail":
    sys.stderr.write("failing on purpose\\n")
    sys.exit(3)
'''


def write_hook(folder: str) -> tuple[str, str]:
    """A recording hook in ``folder``: (its path, the file its runs are recorded in, one JSON line each)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "record-hook")
    record = os.path.join(folder, "runs.jsonl")
    with open(path, "w") as script:
        script.write(_SCRIPT.format(python=sys.executable, record=record))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path, record


def runs(record: str) -> list[dict]:
    """The runs recorded so far."""
    try:
        with open(record) as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except FileNotFoundError:
        return []
