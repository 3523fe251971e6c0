#!/bin/sh
# Runs inside the booted web role (`kiln test`): the root is the overlay
# in RAM, and nginx serves the page.
set -e
findmnt -no FSTYPE / | grep -qx overlay
page=$(busybox wget -q -O - http://127.0.0.1/)
echo "nginx answered: $page"
[ "$page" = "<h1>served from RAM</h1>" ]
