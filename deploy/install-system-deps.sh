#!/usr/bin/env bash
# Installs the Debian packages imagejobs needs when they are missing: Java 17+ and Maven (Kafka),
# PostgreSQL's server, the headers pillow-simd builds against, and Prometheus (dashboard test). Needs root (or sudo) for
# apt-get; without it, prints exactly what to install and fails.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)  # the dashboard test scrapes the stack
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
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
