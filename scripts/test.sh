#!/bin/sh
# Install what the tests need on a fresh Debian machine, then run them all.
# Usage: sh scripts/test.sh [trial arguments]   (default: the whole suite)
set -eu
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

apt_install() {
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# From Debian: DICOM peers (DCMTK: echoscu, storescu, storescp, dcmdump,
# dcmconv), tshark's DICOM dissector, Python if there is none, and the
# mount and setpriv the tests run as root use (in Debian's base system,
# but not in every image).
need=""
{ [ -x /usr/bin/storescu ] && [ -x /usr/bin/dcmdump ]; } || need="$need dcmtk"
[ -x /usr/bin/tshark ] || need="$need tshark"
command -v python3 >/dev/null 2>&1 || need="$need python3"
command -v mount >/dev/null 2>&1 || need="$need mount"
command -v setpriv >/dev/null 2>&1 || need="$need util-linux"
[ -z "$need" ] || apt_install $need

# Python packages with pip. An interpreter Debian manages (PEP 668: pip
# refuses to install into it) gets a virtual environment in .venv instead.
python=python3
if python3 -c 'import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(0 if managed and sys.prefix == sys.base_prefix else 1)'; then
    if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
        python3 -m venv --clear .venv >/dev/null 2>&1 || { apt_install python3-venv; python3 -m venv --clear .venv; }
    fi
    python=.venv/bin/python
elif ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
fi

# compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/radx_scp.py.
$python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'

log=$(mktemp)
status=0
$python -m twisted.trial "${@:-tests}" 2>&1 | tee "$log" || true
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
