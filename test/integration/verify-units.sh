#!/bin/bash
# systemd-analyze verify on every unit, with ExecStart pointing at the built binaries.
# Any warning fails: verify exits 0 on unknown keys, so its output is checked too.
set -euo pipefail
build=${SIPFLEET_BUILD_ROOT:?run through meson test}
src=${SIPFLEET_SOURCE_ROOT:?run through meson test}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
for in in "$src"/units/*.service.in; do
        name=$(basename "$in" .in)
        role=${name#sipfleet-}
        role=${role%.service}
        role=${role%@}
        sed "s|@SBINDIR@|$build/$role|; s|@CONFDIR@|/etc/sipfleet|" "$in" > "$tmp/$name"
        unit=$tmp/$name
        [[ $name == *@.service ]] && { cp "$unit" "$tmp/${name/@/@test}"; unit=$tmp/${name/@/@test}; }
        out=$(systemd-analyze verify "$unit" 2>&1) || { echo "not ok - $name: $out"; exit 1; }
        if [[ -n $out ]]; then
                echo "not ok - $name: $out"
                exit 1
        fi
        for key in Type=notify ExecStartPre= WatchdogSec= Restart=on-failure User=sipfleet \
                   RuntimeDirectory= StateDirectory= ConfigurationDirectory= NoNewPrivileges=yes \
                   ProtectSystem=strict SystemCallFilter=@system-service; do
                grep -q "^$key" "$unit" || { echo "not ok - $name lacks $key"; exit 1; }
        done
        n=$((n + 1))
        echo "ok $n - $name verified"
done
echo "1..$n"
