#!/usr/bin/env bash
# Install the system tools the tests drive (DCMTK's storescu, findscu, movescu...).
set -euo pipefail
if [ -x /usr/bin/storescu ] && [ -x /usr/bin/findscu ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
echo "installing DCMTK (apt-get install dcmtk)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk >/dev/null
