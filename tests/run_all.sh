#!/usr/bin/env bash
# Install everything the test suite needs, then run all of it (the README's test command;
# .ci/run calls exactly this). Python packages from PyPI (the dev extra), Debian's chromium
# and the pinned npm packages for the browser demo, a JDK and Maven for the Android core
# (Maven then fetches JUnit and JNA from Maven Central). Installing Debian packages needs
# root, as on CI; once they are installed every test runs, so a missing tool is a failure
# (CI=true), not a skip. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev]"
if ! command -v mvn >/dev/null || ! command -v javac >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven default-jdk-headless >/dev/null
fi
if [ -f web_demo/install_test_deps.sh ]; then
  bash web_demo/install_test_deps.sh
fi
export CI=true
python -m pytest -q "$@"
