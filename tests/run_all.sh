#!/usr/bin/env bash
# Install everything the test suite needs, then run all of it (the README's test command;
# .ci/run calls exactly this). Python packages from PyPI (the dev extra), Debian's chromium
# and the pinned npm packages for the browser demo, a JDK and Maven for the Android core
# (Maven then fetches JUnit and JNA from Maven Central), Debian's aapt, android-framework-res,
# zipalign, apksigner and dexdump for the Android APK (android_demo/build_apk.sh), curl and unzip for
# android_demo/gradlew, and for the Raspberry Pi path
# Debian's qemu-user-static, binfmt-support and debootstrap. Installing Debian packages needs
# root, as on CI; once they are installed every test runs, so a missing tool is a failure
# (CI=true), not a skip. Extra arguments go to pytest.
#
# The emulated arm64 and armhf Debian roots of tests/test_raspberry_pi.py take a minute or two
# each to build (debootstrap's download, unpacked on the host): as root they are built in the
# background while the other tests run, in a fresh temporary folder removed at the end
# (nothing is cached between runs). Set TFTL_ARM64_ROOT / TFTL_ARMHF_ROOT to keep and reuse
# roots of your own instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev]"
if ! command -v mvn >/dev/null || ! command -v javac >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven default-jdk-headless >/dev/null
fi
# Debian's Android build tools for android_demo/build_apk.sh (tests/test_apk.py): no Android SDK needed.
if ! command -v aapt >/dev/null || ! command -v apksigner >/dev/null || ! command -v zipalign >/dev/null \
    || ! command -v dexdump >/dev/null || [ ! -f /usr/share/android-framework-res/framework-res.apk ] \
    || ! command -v curl >/dev/null || ! command -v unzip >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    aapt android-framework-res zipalign apksigner dexdump curl unzip >/dev/null
fi
if [ -f web_demo/install_test_deps.sh ]; then
  bash web_demo/install_test_deps.sh
fi
export CI=true
if [ "$(id -u)" = 0 ] && [ -z "${TFTL_ARM64_ROOT:-}${TFTL_ARMHF_ROOT:-}" ]; then
  pi_roots=$(mktemp -d /tmp/tftl-pi-roots.XXXXXX)
  export TFTL_ARM64_ROOT="$pi_roots/arm64" TFTL_ARMHF_ROOT="$pi_roots/armhf"
  (bash tests/arm64/root.sh "$TFTL_ARM64_ROOT" arm64 && bash tests/arm64/root.sh "$TFTL_ARMHF_ROOT" armhf) \
    >"$pi_roots/build.log" 2>&1 &
  builder=$!
  cleanup() {
    kill "$builder" 2>/dev/null || true
    pkill -f -- "$pi_roots" 2>/dev/null || true   # debootstrap and its emulated children
    wait "$builder" 2>/dev/null || true
    findmnt -rn -o TARGET | { grep -F "$pi_roots/" || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf --one-file-system "$pi_roots" || true
  }
  trap cleanup EXIT
fi
# Two workers (tests/conftest.py keeps each module on one); the 40 slowest tests go to the CI log.
python -m pytest -q -n "${TFTL_TEST_WORKERS:-2}" --dist loadfile --durations=40 "$@"
