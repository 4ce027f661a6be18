#!/bin/sh
# Writes the rendered zone (ZONE_TEXT) to ZONE_FILE, atomically, and has the rig's PowerDNS
# (configured in DNS_DIR) reload ZONE. When PowerDNS is not running yet, it reads the file
# when it starts.
set -eu
tmp="$ZONE_FILE.tmp.$$"
printf '%s' "$ZONE_TEXT" > "$tmp"
mv "$tmp" "$ZONE_FILE"
if pdns_control --config-dir="$DNS_DIR" rping >/dev/null 2>&1; then
    pdns_control --config-dir="$DNS_DIR" bind-reload-now "$ZONE"
else
    echo "PowerDNS is not running: it reads $ZONE_FILE when it starts"
fi
