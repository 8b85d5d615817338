#!/usr/bin/env bash
# Install the system tools the tests drive (DCMTK's storescu, findscu, movescu...;
# Orthanc from Debian as a peer for tests/integration/test_peers.py).
set -euo pipefail
if [ -x /usr/bin/storescu ] && [ -x /usr/bin/findscu ] && [ -x /usr/sbin/Orthanc ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
if [ ! -x /usr/bin/storescu ] || [ ! -x /usr/bin/findscu ]; then
  echo "installing DCMTK (apt-get install dcmtk)" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dcmtk >/dev/null
fi
if [ ! -x /usr/sbin/Orthanc ]; then
  # The tests start Orthanc themselves, in a network namespace: the package's service
  # must not start a daemon (policy-rc.d exit 101 = action forbidden).
  echo "installing Orthanc (apt-get install orthanc)" >&2
  POLICY=/usr/sbin/policy-rc.d
  CREATED=
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
    CREATED=1
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq orthanc >/dev/null
  if [ -n "$CREATED" ]; then $SUDO rm -f "$POLICY"; fi
  # Should a service manager have started it anyway, stop and disable it.
  $SUDO systemctl disable --now orthanc >/dev/null 2>&1 || true
  $SUDO service orthanc stop >/dev/null 2>&1 || true
fi
