#!/usr/bin/env bash
# What the browser tests (tests/test_web.py) need, idempotent: Debian's chromium (never a
# downloaded browser) and the pinned npm packages, then the page's bundle (dist/).
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi
# npm ci again only when the lock file changed since the last install.
if ! cmp -s package-lock.json node_modules/.tftl-installed-lock 2>/dev/null; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.tftl-installed-lock
fi
npm run --silent build
