#!/usr/bin/env bash
# Make Debian's chromium and chromium-driver available for the chat-page browser test.
# Installs them with apt-get only when running as root (CI containers); anyone else gets the
# command to run, and the browser test is skipped on their machine (it fails under CI=true).
set -uo pipefail
if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[browser] installing chromium and chromium-driver for the chat-page test (apt-get)"
  if apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then
    exit 0
  fi
  echo "[browser] apt-get could not install chromium" >&2
else
  echo "[browser] no chromium: the chat-page browser test will be skipped." \
       "Install it with: sudo apt-get install chromium chromium-driver" >&2
fi
exit 0
