#!/bin/sh
# Install what the tests need on a fresh Debian machine, then run them all.
# Usage: sh scripts/test.sh [trial arguments]   (default: the whole suite)
set -eu
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# DICOM peers (DCMTK) and tshark's DICOM dissector, from Debian.
if [ ! -x /usr/bin/storescu ] || [ ! -x /usr/bin/tshark ] || [ ! -x /usr/bin/dcmdump ]; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends dcmtk tshark >/dev/null
fi

# compat mode puts the checkout on sys.path, so twistd finds twisted/plugins/radx_scp.py.
python3 -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[test]'

log=$(mktemp)
status=0
python3 -m twisted.trial "${@:-tests}" 2>&1 | tee "$log" || true
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
