#!/bin/sh
# Install what the tests need on a fresh Debian machine, then run them.
# Usage: sh scripts/test.sh [trial arguments]          the whole suite (what CI runs)
#        sh scripts/test.sh --fast [trial arguments]   the fast set of tests/fast.py:
#                                                      no sockets, no DCMTK, no other programs
set -eu
cd "$(dirname "$0")/.."

fast=""
if [ "${1:-}" = "--fast" ]; then
    fast=1
    shift
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

apt_install() {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# From Debian: DICOM peers (DCMTK: echoscu, storescu, storescp, dcmdump,
# dcmconv), tshark's DICOM dissector, HAProxy (in front of two servers
# in a test), systemd-socket-activate, PostgreSQL's server programs (the
# PostgreSQL catalogue's tests start one; Debian keeps them off PATH, in
# /usr/lib/postgresql/VERSION/bin), Python if there is none, and the
# mount and setpriv the tests run as root use (in Debian's base system,
# but not in every image).
# The fast set needs Python only.
need=""
if [ -z "$fast" ]; then
    { [ -x /usr/bin/storescu ] && [ -x /usr/bin/dcmdump ]; } || need="$need dcmtk"
    [ -x /usr/bin/tshark ] || need="$need tshark"
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need="$need postgresql"
    [ -x /usr/sbin/haproxy ] || need="$need haproxy"
    [ -x /usr/bin/systemd-socket-activate ] || need="$need systemd"
    command -v mount >/dev/null 2>&1 || need="$need mount"
    command -v setpriv >/dev/null 2>&1 || need="$need util-linux"
fi
command -v python3 >/dev/null 2>&1 || need="$need python3"
[ -z "$need" ] || apt_install $need

# Python packages with pip, always into the virtual environment .venv
# (created here), never into the interpreter python3 names: Debian's
# refuses (PEP 668), and any other (pyenv's, a distribution's) would be
# changed for everything else that uses it.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    python3 -m venv --clear .venv >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv --clear .venv; }
fi
python=.venv/bin/python
if ! $python -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
    echo "scripts/test.sh: .venv/bin/python is not a virtual environment; remove .venv and run again" >&2
    exit 1
fi

# The install is editable: the code is read from the checkout. pip runs
# again only when pyproject.toml (the dependencies, the commands) has
# changed since the last install into this .venv, as a stamp in it says.
stamp=.venv/radx-installed-from
wanted=$(cksum < pyproject.toml)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    rm -f "$stamp"
    # compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/radx_scp.py.
    $python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'

    # pynetdicom's Python programs are named as DCMTK's (echoscu, storescu,
    # storescp...): with .venv/bin on PATH they would shadow the DCMTK
    # commands the README runs. The tests use pynetdicom as a library only.
    $python -c 'import os, sys
from importlib.metadata import distribution
folder = os.path.dirname(sys.executable)
for entry in distribution("pynetdicom").entry_points:
    path = os.path.join(folder, entry.name)
    if entry.group == "console_scripts" and os.path.exists(path):
        os.remove(path)'
    printf '%s\n' "$wanted" > "$stamp"
fi

log=$(mktemp)
status=0
if [ -n "$fast" ]; then
    $python -m tests.fast "$@" 2>&1 | tee "$log" || true
else
    $python -m twisted.trial "${@:-tests}" 2>&1 | tee "$log" || true
fi
summary=$(tail -n 1 "$log")
case "$summary" in
    PASSED*) status=0 ;;
    *) status=1 ;;
esac
# One plain closing line: "N passed, N failed".
ran=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$log" | tail -n 1)
failures=$(printf '%s\n' "$summary" | grep -o 'failures=[0-9]*' | cut -d= -f2 || true)
errors=$(printf '%s\n' "$summary" | grep -o 'errors=[0-9]*' | cut -d= -f2 || true)
bad=$(( ${failures:-0} + ${errors:-0} ))
echo "$(( ${ran:-0} - bad )) passed, $bad failed"
rm -f "$log"
exit $status
