#!/usr/bin/env bash
# Services for the docker sandbox back-end where no Docker engine runs: Podman's Docker Engine API
# on a unix socket, and an image with python3 and g++ built from a Debian root filesystem (no image
# registry is reachable). The image's tag names its contents: change both when the contents change,
# so machines that have the old image build the new one. Idempotent and fast when everything is in place; exits 0 with a message when it
# cannot set things up, and the docker sandbox tests then skip saying why.
#   bash scripts/sandbox_setup.sh          # run by scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[sandbox-setup] %s\n' "$*"; }

# Keep in sync with sandboxes/docker.py (PODMAN_SOCKET, DEFAULT_IMAGE).
socket_dir=/run/rlvr
socket="$socket_dir/podman.sock"
image="localhost/rlvr-sandbox:bookworm-python3-gxx"
packages=python3,g++
export CONTAINERS_CONF="$PWD/sandboxes/containers.conf"

if [[ $(id -u) != 0 ]]; then
    say "not root: skipping Podman's API service and the sandbox image (docker sandbox tests will skip)."
    say "run 'sudo bash scripts/sandbox_setup.sh' or point the docker sandbox at a Docker host (DOCKER_HOST)."
    exit 0
fi
if ! command -v podman >/dev/null; then
    say "podman is not installed: the docker sandbox back-end needs a Docker host (DOCKER_HOST) instead."
    exit 0
fi

# --- The image, built once per machine (Podman's image store survives across CI runs).
if podman image exists "$image"; then
    say "image $image present"
elif ! command -v debootstrap >/dev/null; then
    say "debootstrap is not installed: cannot build $image; docker sandbox tests will skip."
    exit 0
else
    say "building $image from a Debian root filesystem (a few minutes, once per machine)"
    rootfs=$(mktemp -d /var/tmp/rlvr-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    if ! debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" \
        http://deb.debian.org/debian >"$rootfs.log" 2>&1; then
        say "debootstrap failed (see $rootfs.log); docker sandbox tests will skip."
        exit 0
    fi
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
    say "image $image built"
fi

# --- Podman's Docker Engine API service on a unix socket.
if [[ -S $socket ]] && curl -fsS --unix-socket "$socket" http://d/_ping >/dev/null 2>&1; then
    say "Podman API service already listening on unix://$socket"
else
    mkdir -p "$socket_dir"
    rm -f "$socket"
    (
        # Run from the socket's directory: conmon drops files (an "oom" marker) into the service's cwd.
        cd "$socket_dir"
        # Close every inherited descriptor but 0-2: a daemon holding its caller's pipe open keeps
        # whoever reads that pipe (a CI runner, `| tail`) waiting for ever.
        for fd in /proc/$BASHPID/fd/*; do
            fd=${fd##*/}
            if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
        done
        setsid nohup podman system service --time=0 "unix://$socket" >/var/log/rlvr-podman-service.log 2>&1 </dev/null &
    )
    for _ in $(seq 50); do
        [[ -S $socket ]] && curl -fsS --unix-socket "$socket" http://d/_ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    if [[ -S $socket ]]; then
        say "Podman API service started on unix://$socket (log: /var/log/rlvr-podman-service.log)"
    else
        say "Podman API service did not come up (see /var/log/rlvr-podman-service.log); docker sandbox tests will skip."
    fi
fi
