#!/bin/sh
# Debian packages the project needs on the host: Mosquitto (started by the
# demo and the tests with the project's own config) and python3-venv.
# As root, missing ones are installed with apt-get; otherwise we say what to run.
set -eu

missing=""
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    missing="$missing mosquitto"
fi
if ! command -v mosquitto_passwd >/dev/null 2>&1 && [ ! -x /usr/bin/mosquitto_passwd ]; then
    case "$missing" in *mosquitto*) ;; *) missing="$missing mosquitto" ;; esac
fi
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    missing="$missing python3-venv"
fi
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing
    # Debian starts a system-wide broker on 1883 where it can; ours use their own ports.
else
    echo "missing Debian packages:$missing" >&2
    echo "install them with: sudo apt-get install$missing" >&2
    exit 1
fi
