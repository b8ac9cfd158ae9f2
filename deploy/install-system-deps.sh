#!/usr/bin/env bash
# Installs the Debian packages imagejobs needs when they are missing: Java 17+ and Maven (Kafka),
# PostgreSQL's server, python3-venv, a C compiler and the headers pillow-simd builds against,
# Prometheus (dashboard and alert tests), Node (the AsyncAPI check) and Chromium (the API docs
# pages test). Needs root (or sudo) for apt-get; without it, prints exactly what to install and fails.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)  # the dashboard test scrapes the stack
# a stock Debian/Ubuntu lacks these: the virtualenv module, a C compiler and Python's headers
# (pillow-simd is built from source), and the image libraries it links against
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v gcc >/dev/null 2>&1 || need+=(build-essential)
python3 -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need+=(python3-dev)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)  # the alert rules test runs promtool
command -v node >/dev/null 2>&1 || need+=(nodejs)  # the AsyncAPI parser validates docs/asyncapi.yaml
command -v npm >/dev/null 2>&1 || need+=(npm)
# the Swagger UI test drives Debian's Chromium with Playwright (Playwright's own browser builds
# cannot be downloaded here, and a distribution package is patched with the rest of the system)
[ -x /usr/bin/chromium ] || need+=(chromium)
for pkg in libjpeg-dev zlib1g-dev libwebp-dev libpng-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
  echo "imagejobs: Python 3.11 or newer is required (python3 is $(python3 --version 2>&1))" >&2; exit 1; }

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "imagejobs: missing system packages; install them with: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
# wait for another apt-get (a shared machine, unattended upgrades) instead of failing on its lock
APT=(apt-get -o DPkg::Lock::Timeout=600)
$SUDO "${APT[@]}" update -q
$SUDO "${APT[@]}" install -y -q --no-install-recommends "${need[@]}"
