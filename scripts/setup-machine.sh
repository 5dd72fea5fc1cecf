#!/usr/bin/env bash
# Installs what netemu needs on a Debian/Ubuntu machine: system packages (when missing) and a
# virtualenv in .venv with netemu and its Python dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v "$PY" >/dev/null 2>&1 || need_apt+=(python3)
if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then need_apt+=(python3-venv python3-pip); fi
# Emulation (link engine, tests, probes): iproute2 (ip, tc), ping, iperf3, tcpdump, nsenter
# (util-linux), and Mininet's mnexec (Debian's mininet; its Python module comes from PyPI).
# Reports: Chromium renders report.html headless in the tests.
for pair in ip:iproute2 tc:iproute2 ping:iputils-ping iperf3:iperf3 tcpdump:tcpdump nsenter:util-linux mnexec:mininet \
            chromium:chromium; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair##*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi

"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"netemu needs Python >= 3.11, found {sys.version.split()[0]}; install python3.11 or set PYTHON=")
PYCHECK

if [ ! -x .venv/bin/python ]; then
  echo "== creating virtualenv .venv"
  "$PY" -m venv .venv
fi
echo "== installing netemu and its Python dependencies into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "== ready: .venv/bin/netemu"
