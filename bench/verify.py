"""Check what a receiver stored against the corpus: every instance, once, its data set byte-identical.

Receivers name files their own way (radx: Study/Series/Instance.dcm;
storescp and pynetdicom: <modality>.<UID>[.dcm] in one folder), so each
received file is matched to its source by the Media Storage SOP Instance
UID of its file meta, and its data set (the bytes after the group-0002
meta, whose end is read from (0002,0000) File Meta Information Group
Length) is hashed and compared with the source's.
"""

from __future__ import annotations

import os

from corpus import describe

from radx.storage.part10 import NotPart10


def received_files(folder: str) -> list[str]:
    paths = []
    for root, dirs, files in os.walk(folder):
        # radx's temporary folder (.radx-incoming) and the like: not stored instances.
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        paths.extend(os.path.join(root, name) for name in files if not name.startswith("."))
    return paths


# Hidden folders that hold no partial files: the events journal (--exec-on-*, --events).
NOT_PARTIAL = {".radx-events"}


def leftovers(folder: str) -> list[str]:
    """Files in hidden folders (radx's partial files): there should be none after a clean run."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not (root == folder and name in NOT_PARTIAL)]
        if any(part.startswith(".") for part in os.path.relpath(root, folder).split(os.sep) if part != "."):
            found.extend(os.path.join(root, name) for name in files)
    return found


def verify(folder: str, expected: list[dict]) -> dict:
    """
    Compare ``folder`` with the manifest entries ``expected``.

    @return: {"ok": bool, "checked": n, "problems": [first few]}
    """
    want = {entry["uid"]: entry for entry in expected}
    seen = set()
    problems = []
    for path in received_files(folder):
        try:
            got = describe(path)
        except (NotPart10, OSError, ValueError) as error:
            problems.append(f"{os.path.relpath(path, folder)}: not a PS3.10 file ({error})")
            continue
        entry = want.get(got["uid"])
        if entry is None:
            problems.append(f"{os.path.relpath(path, folder)}: unexpected SOP Instance UID {got['uid']}")
            continue
        if got["uid"] in seen:
            problems.append(f"{got['uid']}: stored twice")
            continue
        seen.add(got["uid"])
        if got["data_set_bytes"] != entry["data_set_bytes"] or got["sha256"] != entry["sha256"]:
            problems.append(
                f"{os.path.relpath(path, folder)}: data set differs from {entry['file']}"
                f" ({got['data_set_bytes']} bytes vs {entry['data_set_bytes']}; transfer syntax {got['transfer_syntax']})"
            )
    missing = len(want) - len(seen)
    if missing:
        problems.append(f"{missing} of {len(want)} instances missing")
    stray = leftovers(folder)
    if stray:
        problems.append(f"{len(stray)} partial files left in hidden folders")
    return {"ok": not problems, "checked": len(seen), "problems": problems[:5], "problem_count": len(problems)}
