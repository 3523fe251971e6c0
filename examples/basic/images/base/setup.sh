#!/bin/sh
# Runs inside the image root during the build.
set -eu
echo "built by kiln for $KILN_VARIANT" > /etc/kiln-release
