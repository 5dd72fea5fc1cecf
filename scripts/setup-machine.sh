#!/usr/bin/env bash
# Installs what netemu needs on a Debian/Ubuntu machine: system packages (when missing) and a
# virtualenv in .venv with netemu and its Python dependencies. Safe to run again.
#   --with-browser   also Chromium (~350 MB), which only the report test uses (make test passes it)
set -euo pipefail
cd "$(dirname "$0")/.."

with_browser=0
for arg in "$@"; do
  case "$arg" in
    --with-browser) with_browser=1 ;;
    *) echo "setup-machine.sh: unknown option $arg (expected --with-browser)" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v "$PY" >/dev/null 2>&1 || need_apt+=(python3)
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then need_apt+=(python3-venv python3-pip); fi
# Emulation (link engine, tests, probes): iproute2 (ip, tc), ping, iperf3, tcpdump, nsenter
# (util-linux), and Mininet's mnexec (Debian's mininet; its Python module comes from PyPI).
# Reports: Chromium renders report.html headless in the tests only (--with-browser).
tools="ip:iproute2 tc:iproute2 ping:iputils-ping iperf3:iperf3 tcpdump:tcpdump nsenter:util-linux mnexec:mininet"
if [ "$with_browser" -eq 1 ]; then tools="$tools chromium:chromium"; fi
for pair in $tools; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  # one line on the terminal; apt's own output goes to a log, shown only if it fails
  echo "== installing system packages: ${need_apt[*]} (log: /tmp/netemu-apt.log)"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
         --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u); } >/tmp/netemu-apt.log 2>&1; then
    tail -n 20 /tmp/netemu-apt.log >&2
    echo "setup-machine.sh: installing system packages failed (full log: /tmp/netemu-apt.log)" >&2
    exit 1
  fi
fi

"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"netemu needs Python >= 3.11, found {sys.version.split()[0]} (Ubuntu 22.04 ships 3.10): "
             "install python3.11 (e.g. from the deadsnakes PPA: apt-get install python3.11 python3.11-venv) "
             "and run again with PYTHON=python3.11, or use Ubuntu 24.04 / Debian 12")
PYCHECK

if [ ! -x .venv/bin/python ]; then
  echo "== creating virtualenv .venv"
  "$PY" -m venv .venv
fi
echo "== installing netemu and its Python dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "== ready: .venv/bin/netemu"
