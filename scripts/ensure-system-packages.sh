#!/usr/bin/env bash
# Installs the Debian packages the test-suite needs when they are missing.
# As root it installs them with apt-get; otherwise it stops and says what to install.
set -euo pipefail

# binary -> Debian package
declare -A needed=(
  [mosquitto]=mosquitto
  [chromium]=chromium
)

missing=()
for binary in "${!needed[@]}"; do
  if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ]; then
    missing+=("${needed[$binary]}")
  fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing system packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "Installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
# Debian starts the packaged broker on 1883; the tests start their own brokers on free ports.
# Chromium is driven by Playwright (playwright-python) for the web page's tests; no browser download.
