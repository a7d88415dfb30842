#!/bin/sh
# Starts the Docker daemon when it is not answering (CI machines start with none running), and waits for
# it. The daemon's output goes to /var/log/opensandbox-dockerd.log.
set -eu
if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker-up: dockerd is not installed (scripts/setup.sh installs docker.io)" >&2
    exit 1
fi
echo "docker-up: starting dockerd"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
# The daemon must not inherit the caller's other descriptors: a test run under `flock LOCK cmd` that
# (re)starts dockerd would otherwise hand it the lock, which then outlives the run and blocks every later
# run forever (it happened). Descriptors 3-9 (where flock and shells put theirs) are closed for it.
$SUDO sh -c 'exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-; nohup dockerd >>/var/log/opensandbox-dockerd.log 2>&1 &'
i=0
while ! docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        echo "docker-up: dockerd did not come up; see /var/log/opensandbox-dockerd.log" >&2
        tail -20 /var/log/opensandbox-dockerd.log >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "docker-up: dockerd is running"
