#!/usr/bin/env bash
# The systemd files in systemd/: the unit verifies (systemd-analyze verify, with a broken copy
# as the control that verify really checks), its exposure is at most 2.0 (systemd-analyze
# security, offline), the sysusers and tmpfiles snippets apply to an empty root, and the
# example configuration passes clipcapd --check-config.
# Usage: unit_file_test.sh SOURCE_DIR CLIPCAPD. Exit 77 (skipped) without systemd-analyze.
set -euo pipefail
source_dir=$1
clipcapd=$(realpath "$2")
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not installed: skipped"; exit 77; }

work=$(mktemp -d /tmp/clipcap-unit.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# verify checks that ExecStart exists: point it at the binary under test. An instance name
# (clipcapd@0.service) so the %i specifiers resolve.
sed "s|^ExecStart=/usr/bin/clipcapd |ExecStart=$clipcapd |" "$source_dir/systemd/clipcapd@.service" \
    >"$work/clipcapd@0.service"
grep -q "^ExecStart=$clipcapd " "$work/clipcapd@0.service" || fail "ExecStart not found in the unit"
(cd "$work" && systemd-analyze verify --man=no ./clipcapd@0.service) >"$work/verify.out" 2>&1 ||
    fail "systemd-analyze verify: $(cat "$work/verify.out")"
[ ! -s "$work/verify.out" ] || fail "systemd-analyze verify warns: $(cat "$work/verify.out")"

mkdir "$work/broken"
sed 's/^WatchdogSec=/WatchdogSecs=/' "$work/clipcapd@0.service" >"$work/broken/clipcapd@0.service"
(cd "$work/broken" && systemd-analyze verify --man=no ./clipcapd@0.service) >"$work/broken.out" 2>&1 || true
grep -q "WatchdogSecs" "$work/broken.out" || fail "verify did not notice a misspelled directive"

(cd "$work" && systemd-analyze security --offline=true ./clipcapd@0.service) >"$work/security.out" 2>&1 ||
    true
exposure=$(sed -n 's/.*Overall exposure level for clipcapd@0.service: \([0-9.]*\).*/\1/p' \
    "$work/security.out")
[ -n "$exposure" ] || fail "no exposure level: $(tail -n 5 "$work/security.out")"
awk -v e="$exposure" 'BEGIN { exit !(e <= 2.0) }' || fail "exposure $exposure > 2.0"

for directive in Type=notify WatchdogSec= Restart=on-failure TimeoutStopSec= NoNewPrivileges=yes \
    ProtectSystem=strict PrivateTmp=yes DevicePolicy=closed "Environment=CUDA_VISIBLE_DEVICES=%i"; do
    grep -q "^$directive" "$source_dir/systemd/clipcapd@.service" || fail "unit lacks $directive"
done
# Devices: only NVIDIA nodes are allowed besides the standard pseudo-devices.
if grep '^DeviceAllow=' "$source_dir/systemd/clipcapd@.service" | grep -v '^DeviceAllow=/dev/nvidia'; then
    fail "a DeviceAllow= outside /dev/nvidia*"
fi
# The stop timeout covers the default drain.
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' "$source_dir/systemd/clipcapd@.service")
drain=$("$clipcapd" --check-config | sed -n 's/^drain_timeout_seconds = //p')
[ "$stop" -gt "$drain" ] || fail "TimeoutStopSec=${stop}s does not exceed the ${drain} s drain"

if command -v systemd-sysusers >/dev/null && command -v systemd-tmpfiles >/dev/null; then
    mkdir -p "$work/root/etc"
    systemd-sysusers --root="$work/root" "$source_dir/systemd/clipcap.sysusers.conf" >/dev/null
    grep -q '^clipcap:' "$work/root/etc/passwd" || fail "sysusers did not create clipcap"
    systemd-tmpfiles --root="$work/root" --create "$source_dir/systemd/clipcap.tmpfiles.conf"
    [ -d "$work/root/var/lib/clipcap/models" ] || fail "tmpfiles did not create the model directory"
fi

"$clipcapd" --config "$source_dir/systemd/clipcapd.conf" --check-config >"$work/check.out" ||
    fail "the example configuration does not validate"
grep -q '^backend = cuda$' "$work/check.out" || fail "example config not read"
echo "unit: verify clean, exposure $exposure, sysusers/tmpfiles apply, example config valid"
