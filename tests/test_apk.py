"""android_demo/build_apk.sh: the debug APK, built here without the Android SDK, and checked as a phone would.

One module-scoped build with the shared mbv2 flowers5 model bundled (conftest.mbv2_flowers), then:
`aapt dump badging` (package, SDK levels, launchable activity, native code), `apksigner verify`,
`zipalign -c`, the dex's classes (`dexdump`), the model stored uncompressed and byte-identical, the
manifest's service and provider. Needs Debian's aapt, android-framework-res, zipalign, apksigner and
dexdump plus a JDK and Maven: skipped with the reason when missing, failed when CI=true.
"""

import os
import re
import subprocess
import zipfile

import pytest

from conftest import REPO, require_aapt, require_java, require_tools

ANDROID = os.path.join(REPO, "android_demo")
APK = os.path.join(ANDROID, "build", "tftl-demo-debug.apk")
TOOLS = ("zipalign", "apksigner", "dexdump")
APP_CLASSES = ("org.tftl.app.MainActivity", "org.tftl.app.InferenceActivity", "org.tftl.app.TftlApp",
               "org.tftl.app.PersonalizeViewModel", "org.tftl.app.TrainingService", "org.tftl.app.PhotoProvider",
               "org.tftl.app.LiteRtInterpreter", "org.tftl.core.Trainer", "org.tftl.core.ModelFile",
               "org.tensorflow.lite.Interpreter", "com.google.gson.Gson")


@pytest.fixture(scope="module")
def apk(mbv2_flowers):
    require_java()
    require_aapt()
    require_tools(TOOLS, "Debian's zipalign, apksigner and dexdump", "the APK test")
    r = subprocess.run(["bash", os.path.join(ANDROID, "build_apk.sh"), str(mbv2_flowers)], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    print(r.stdout[-500:])
    return APK, str(mbv2_flowers)


def _run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r.stdout


def test_badging_names_package_sdk_levels_activity_and_abi(apk):
    path, _ = apk
    badging = _run("aapt", "dump", "badging", path)
    assert re.search(r"^package: name='org\.tftl\.app' versionCode='1' versionName='0\.1\.0'", badging, re.M), badging
    assert "sdkVersion:'24'" in badging and "targetSdkVersion:'35'" in badging, badging
    assert "launchable-activity: name='org.tftl.app.MainActivity'" in badging, badging
    assert re.search(r"^native-code: 'arm64-v8a'$", badging, re.M), badging
    print(badging)


def test_signature_and_alignment_verify(apk):
    path, _ = apk
    out = _run("apksigner", "verify", "--verbose", path)
    assert "Verified using v2 scheme (APK Signature Scheme v2): true" in out, out
    _run("zipalign", "-c", "-p", "4", path)
    size = os.path.getsize(path)
    print(f"APK {size} bytes")
    assert 4 << 20 < size < 16 << 20, size  # model (about 6.7 MB) + runtime + dex; far more means a stray file


def test_dex_holds_app_core_runtime_and_gson(apk, tmp_path):
    path, _ = apk
    with zipfile.ZipFile(path) as z:
        (tmp_path / "classes.dex").write_bytes(z.read("classes.dex"))
    dump = _run("dexdump", str(tmp_path / "classes.dex"))
    classes = set(re.findall(r"Class descriptor\s+:\s+'L([^;]+);'", dump))
    missing = [c for c in APP_CLASSES if c.replace(".", "/") not in classes]
    assert not missing, missing
    # No lambda survived into the dex (Android has no LambdaMetafactory; dx refuses invoke-custom below API 26).
    assert "invoke-custom" not in dump and "LambdaMetafactory" not in dump


def test_model_and_native_library_are_packed_as_the_phone_needs(apk):
    path, model = apk
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("assets/model.tflite")
        assert info.compress_type == zipfile.ZIP_STORED  # the app reads the asset as is
        assert z.read("assets/model.tflite") == open(model, "rb").read()
        assert "lib/arm64-v8a/libtensorflowlite_jni.so" in z.namelist()
    manifest = _run("aapt", "dump", "xmltree", path, "AndroidManifest.xml")
    for needle in ("org.tftl.app.TrainingService", "foregroundServiceType", "android.permission.FOREGROUND_SERVICE",
                   "org.tftl.app.PhotoProvider"):
        assert needle in manifest, needle


# ----------------------------------------------------------------------------- android_demo/gradlew

GRADLEW = os.path.join(ANDROID, "gradlew")
PROPS = os.path.join(ANDROID, "gradle", "wrapper", "gradle-wrapper.properties")
FAKE_GRADLE = '#!/bin/sh\necho "fake gradle: $*"\n'


def _fake_distribution(folder, version="8.9"):
    """A Gradle distribution zip whose bin/gradle prints its arguments, and its .sha256 beside it."""
    import hashlib
    dist = folder / f"gradle-{version}-bin.zip"
    with zipfile.ZipFile(dist, "w") as z:
        z.writestr(f"gradle-{version}/bin/gradle", FAKE_GRADLE)
    (folder / f"{dist.name}.sha256").write_text(hashlib.sha256(dist.read_bytes()).hexdigest())
    return dist


def _project(tmp_path, url, extra=""):
    """A copy of gradlew with a properties file naming `url`."""
    import shutil
    project = tmp_path / "project"
    (project / "gradle" / "wrapper").mkdir(parents=True)
    shutil.copy(GRADLEW, project / "gradlew")
    (project / "gradle" / "wrapper" / "gradle-wrapper.properties").write_text(
        f"distributionUrl={url.replace(':', chr(92) + ':', 1)}\n{extra}")
    return project


def _gradlew(project, home, *args):
    env = dict(os.environ, GRADLE_USER_HOME=str(home))
    return subprocess.run([str(project / "gradlew"), *args], capture_output=True, text=True, env=env, timeout=120)


def test_gradlew_fetches_checks_and_runs_the_distribution_once(tmp_path):
    """./gradlew without gradle-wrapper.jar: the distribution named in the properties is downloaded,
    checked against its published SHA-256, unpacked once and run on the project."""
    require_tools(("curl", "unzip", "sha256sum"), "curl and unzip", "the gradlew test")
    dist = _fake_distribution(tmp_path)
    project, home = _project(tmp_path, f"file://{dist}"), tmp_path / "home"
    r = _gradlew(project, home, "assembleDebug")
    assert r.returncode == 0 and r.stdout.strip() == f"fake gradle: -p {project} assembleDebug", r.stderr
    dist.unlink()  # the second run needs no download
    r = _gradlew(project, home, "tasks")
    assert r.returncode == 0 and r.stdout.strip() == f"fake gradle: -p {project} tasks", r.stderr


def test_gradlew_refuses_a_distribution_that_fails_its_checksum(tmp_path):
    require_tools(("curl", "unzip", "sha256sum"), "curl and unzip", "the gradlew test")
    dist = _fake_distribution(tmp_path)
    project = _project(tmp_path, f"file://{dist}", extra="distributionSha256Sum=" + "0" * 64 + "\n")
    home = tmp_path / "home"
    r = _gradlew(project, home, "assembleDebug")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "does not match its SHA-256" in lines[0], r.stderr
    assert "fake gradle" not in r.stdout and not list(home.rglob("bin/gradle"))  # nothing unpacked
    bad = _project(tmp_path / "bad", "http://example.org/gradle.zip")
    r = _gradlew(bad, home, "assembleDebug")
    assert r.returncode == 2 and "distributionUrl must be an https://" in r.stderr, r.stderr


def test_committed_gradlew_runs_the_distribution_its_properties_name(tmp_path):
    """The committed script and properties together: Gradle 8.9 from services.gradle.org, run from
    the folder it is unpacked to (placed here, as no network reaches that host)."""
    with open(PROPS) as f:
        url = next(line.split("=", 1)[1].strip().replace("\\:", ":") for line in f if line.startswith("distributionUrl="))
    assert url == "https://services.gradle.org/distributions/gradle-8.9-bin.zip"
    home = tmp_path / "home"
    unpacked = home / "wrapper" / "dists" / "gradle-8.9-bin" / "tftl"
    (unpacked / "gradle-8.9" / "bin").mkdir(parents=True)
    (unpacked / "gradle-8.9" / "bin" / "gradle").write_text(FAKE_GRADLE)
    (unpacked / ".done").touch()
    r = subprocess.run([GRADLEW, "assembleDebug"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, GRADLE_USER_HOME=str(home)))
    assert r.returncode == 0 and r.stdout.strip() == f"fake gradle: -p {ANDROID} assembleDebug", r.stderr
