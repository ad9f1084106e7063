#!/usr/bin/env bash
# Wafer PBX: the one entry point.
#   ./build.sh test    every test (lint, types, unit, interop, firmware)
#   ./build.sh run     build the image and boot it in QEMU (console on this terminal,
#                      softphones on this machine register to 127.0.0.1:5060)
#   ./build.sh image   build output/images/cf.img
#   ./build.sh bench   run the benchmarks in bench/
#   ./build.sh fuzz    the fuzz tests only, with a larger budget (PBX_FUZZ_SCALE, default 50)
#   ./build.sh host    run the PBX on this machine from the source tree
# Idempotent: installs its own Debian packages and the .venv when missing.
set -euo pipefail
TOP=$(cd "$(dirname "$0")" && pwd)
cd "$TOP"
VENV="$TOP/.venv"
PY=${PBX_PYTHON:-python3.11}

# Debian packages the tests and the build need.
APT_TEST_PKGS="sip-tester kamailio baresip-core libspandsp2 sox espeak-ng sipvicious"
APT_IMAGE_PKGS=""
if [ -f "$TOP/firmware/apt-packages" ]; then
    APT_IMAGE_PKGS=$(grep -v '^#' "$TOP/firmware/apt-packages" | xargs)
fi

step_start=0
step() { step_name="$1"; step_start=$EPOCHREALTIME; printf '==> %s\n' "$step_name"; }
step_done() { awk -v n="$step_name" -v a="$step_start" -v b="$EPOCHREALTIME" 'BEGIN{printf "    %s: %.1fs\n", n, b-a}'; }
fail() { printf '\n*** build.sh: step "%s" failed\n' "${step_name:-?}" >&2; }
trap fail ERR

need_debian() {
    if [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null; then
        echo "build.sh needs a Debian 12 host (apt-get). On another OS use the Vagrantfile:" >&2
        echo "    vagrant up && vagrant ssh -c 'cd /vagrant && ./build.sh image'" >&2
        exit 2
    fi
}

ensure_apt() {
    # ensure_apt PKG... : install the packages that are not installed yet
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    need_debian
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "    installing Debian packages: ${missing[*]}"
    $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    step "python venv (.venv)"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv "$VENV"
    fi
    # Reinstall only when pyproject.toml changed since the last install.
    local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ]; then
        "$VENV/bin/pip" install -q --upgrade pip
        "$VENV/bin/pip" install -q -e ".[dev]"
        rm -f "$VENV"/.installed-*
        touch "$stamp"
    fi
    step_done
}

cmd_test() {
    step "debian packages for tests"
    ensure_apt $APT_TEST_PKGS $APT_IMAGE_PKGS
    step_done
    ensure_venv
    step "lint (ruff)"
    "$VENV/bin/ruff" check pbx_core tests bench firmware
    "$VENV/bin/ruff" format --check pbx_core tests bench firmware
    step_done
    step "type check (mypy --strict)"
    "$VENV/bin/mypy"
    step_done
    step "pytest"
    "$VENV/bin/python" -m pytest "$@"
    step_done
}

cmd_fuzz() {
    ensure_venv
    step "pytest -m fuzz (PBX_FUZZ_SCALE=${PBX_FUZZ_SCALE:-50})"
    PBX_FUZZ_SCALE="${PBX_FUZZ_SCALE:-50}" "$VENV/bin/python" -m pytest -m fuzz "$@"
    step_done
}

cmd_host() {
    ensure_venv
    local cfg="${PBX_CONFIG:-$TOP/rootfs_overlay/etc/pbx/factory}"
    exec "$VENV/bin/python" -m pbx_core run --config "$cfg" --listen 127.0.0.1:5060 "$@"
}

cmd_image() {
    if [ ! -x "$TOP/firmware/build-image.sh" ]; then
        echo "firmware/build-image.sh is not there yet" >&2; exit 2
    fi
    step "debian packages for the image"
    ensure_apt $APT_IMAGE_PKGS
    step_done
    ensure_venv
    VENV="$VENV" "$TOP/firmware/build-image.sh"
}

cmd_run() {
    if [ -x "$TOP/firmware/build-image.sh" ]; then
        cmd_image
        exec "$VENV/bin/python" "$TOP/firmware/run-qemu.py" "$@"
    fi
    echo "(no firmware yet: running the PBX on the host)"
    cmd_host "$@"
}

cmd_bench() {
    step "debian packages for benchmarks"
    ensure_apt $APT_TEST_PKGS
    step_done
    ensure_venv
    local b
    for b in bench/bench_*.py; do
        step "$b"
        "$VENV/bin/python" "$b"
        step_done
    done
}

case "${1:-}" in
    test) shift; cmd_test "$@" ;;
    run) shift; cmd_run "$@" ;;
    image) shift; cmd_image "$@" ;;
    bench) shift; cmd_bench "$@" ;;
    fuzz) shift; cmd_fuzz "$@" ;;
    host) shift; cmd_host "$@" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
