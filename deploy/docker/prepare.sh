#!/usr/bin/env bash
# Makes this machine able to run docker-compose.yml, installing only what is missing:
#   1. a Docker engine: Debian's docker.io, started if it is not running (needs root or sudo);
#   2. Docker Compose v2: built from the Go module proxy when no `docker compose` answers;
#   3. the base image debian:bookworm-slim: made from Debian's packages with debootstrap when
#      there is none (no image registry is needed; `docker pull` one first to use Docker's);
#   4. copies the host's locally added certificate authorities into deploy/docker/extra-ca;
#   5. writes `.env` beside docker-compose.yml with a random value for every secret the compose
#      file requires, when there is no `.env` (an existing one is never changed: add a secret
#      that a newer compose file requires by hand; docs/operations.md).
# Downloads are cached under IMAGEJOBS_CACHE (~/.cache/imagejobs): the Compose binary and the
# base image's tarball, so a second machine set-up is seconds. Exit 3: no engine can run here;
# any other failure is a failure.
set -euo pipefail
COMPOSE_VERSION=v2.29.7
CACHE=${IMAGEJOBS_CACHE:-$HOME/.cache/imagejobs}
mkdir -p "$CACHE"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
say() { echo "prepare: $*" >&2; }
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" >/dev/null \
    || { $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
         $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@" >/dev/null; }
}

engine() {
  timeout 20 docker info >/dev/null 2>&1 && return 0
  if [ -S /var/run/docker.sock ] && ! [ -w /var/run/docker.sock ]; then
    say "a Docker engine runs but this user may not use /var/run/docker.sock (join the docker group)"; exit 1; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null 2>&1; then
      say "no Docker engine and no root to install one: apt-get install docker.io"; return 3; fi
    say "installing Debian's docker.io"; apt_install docker.io iptables
  fi
  command -v docker >/dev/null 2>&1 || { say "no docker client"; return 3; }
  say "starting dockerd (log: /var/log/imagejobs-dockerd.log)"
  $SUDO bash -c 'nohup dockerd >/var/log/imagejobs-dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && return 0; sleep 1; done
  say "dockerd did not start: $(tail -n 3 /var/log/imagejobs-dockerd.log 2>/dev/null)"; return 3
}

compose() {
  docker compose version >/dev/null 2>&1 && return 0
  local binary="$CACHE/docker-compose-$COMPOSE_VERSION"
  if [ ! -x "$binary" ]; then
    say "building Docker Compose $COMPOSE_VERSION from the Go module proxy (a few minutes, once)"
    local gobin; gobin=$(mktemp -d)
    GOBIN=$gobin go install "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION"
    mv "$gobin/cmd" "$binary"; rmdir "$gobin"
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  cp "$binary" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null
}

base_image() {
  docker image inspect debian:bookworm-slim >/dev/null 2>&1 && return 0
  local tarball="$CACHE/debian-bookworm-minbase.tar"
  if [ ! -s "$tarball" ]; then
    say "making debian:bookworm-slim with debootstrap (about a minute, once)"
    local root; root=$(mktemp -d)
    $SUDO debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
    $SUDO tee "$root/etc/apt/sources.list" >/dev/null <<'LIST'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST
    $SUDO rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    $SUDO tar -C "$root" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
    $SUDO rm -rf "$root"
  fi
  docker import "$tarball" debian:bookworm-slim >/dev/null
}

# The builds trust the authorities this host added locally (Debian keeps them in
# /usr/local/share/ca-certificates: a TLS-inspecting proxy's, on the way to PyPI and Maven
# Central). EXTRA_CA_DIR names another folder; an empty one trusts Debian's list alone.
extra_authorities() {
  local from=${EXTRA_CA_DIR-/usr/local/share/ca-certificates} here; here="$(dirname "$0")/extra-ca"
  rm -f "$here"/*.crt
  [ -d "$from" ] || return 0
  find "$from" -maxdepth 1 -name '*.crt' -exec cp {} "$here/" \;
}

# The compose file's secrets (each `${NAME:?…}` in docker-compose.yml): 32 random bytes, in hex.
SECRETS=(KAFKA_ADMIN_PASSWORD KAFKA_INGEST_PASSWORD KAFKA_SCHEDULER_PASSWORD KAFKA_PROCESSOR_PASSWORD
         KAFKA_STATUS_PASSWORD KAFKA_STORESTATS_PASSWORD KAFKA_DOWNSTREAM_PASSWORD
         POSTGRES_PASSWORD POSTGRES_APP_PASSWORD GRAFANA_ADMIN_PASSWORD)
secrets_file() {
  local env_file; env_file="$(cd "$(dirname "$0")/../.." && pwd)/.env"
  if [ -e "$env_file" ]; then say "keeping $env_file (an existing .env is never changed)"; return 0; fi
  ( umask 077
    { echo "# Secrets of docker-compose.yml, written by deploy/docker/prepare.sh on $(date -u +%FT%TZ)."
      echo "# Keep this file out of version control; rotating a secret: docs/operations.md."
      for name in "${SECRETS[@]}"; do
        echo "$name=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
      done
    } >"$env_file.part"
    mv "$env_file.part" "$env_file" )
  say "wrote $env_file: ${#SECRETS[@]} random secrets"
}

go_is_new_enough() {  # Compose v2.29's go.mod needs Go 1.21 (Debian bookworm's golang-go is 1.19)
  command -v go >/dev/null 2>&1 && go version | grep -qE 'go1\.(2[1-9]|[3-9][0-9])'
}

secrets_file
engine || exit 3
# what the two parallel steps need from apt, one apt-get at a time (apt's list lock is not waited for)
if ! docker compose version >/dev/null 2>&1 && [ ! -x "$CACHE/docker-compose-$COMPOSE_VERSION" ] \
    && ! go_is_new_enough; then
  say "building Docker Compose needs Go 1.21 or newer (this machine has $(go version 2>/dev/null || echo none));" \
      "install it, or install a Docker Compose v2 plugin"; exit 1
fi
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1 && [ ! -s "$CACHE/debian-bookworm-minbase.tar" ]; then
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
fi
compose &  # the Go build is CPU, debootstrap mostly network: side by side
building=$!
trap 'kill "$building" 2>/dev/null || true' EXIT
base_image
wait "$building"
trap - EXIT
extra_authorities
say "ready: $(docker compose version --short), engine $(docker version -f '{{.Server.Version}}')"
