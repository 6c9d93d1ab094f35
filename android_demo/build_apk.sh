#!/usr/bin/env bash
# Builds build/tftl-demo-debug.apk without the Android SDK or Google's Maven (which this project's
# machines cannot reach), from what Maven Central and Debian serve:
#   javac --release 8  app + core, against Robolectric's android-all (the framework classes) and
#                      the Java API of org.tensorflow:tensorflow-lite 2.16.1 (AAR);
#   dx                 com.jakewharton.android.repackaged:dalvik-dx (AOSP's dx) -> classes.dex,
#                      app + core + Gson + TFLite's classes; dx refuses invokedynamic below API 26,
#                      so app and core have no lambdas (Android has no LambdaMetafactory);
#   aapt (v1)          Debian's aapt with android-framework-res -> manifest + resources + assets;
#   zipalign, apksigner Debian's, with a debug keystore made by keytool.
# Native code: libtensorflowlite_jni.so for arm64-v8a from the same AAR. See README.md for what
# differs from the Gradle build (TFLite 2.16.1 instead of LiteRT 2.1.4, 4 KB page alignment, no R8).
#
# Usage: build_apk.sh [MODEL.tflite]   (MODEL is bundled as assets/model.tflite, stored uncompressed)
# Exit codes: 0 built and verified, 2 bad arguments, 3 a tool is missing.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
MODEL=${1:-}
if [ -n "$MODEL" ] && [ ! -f "$MODEL" ]; then
  echo "build_apk.sh: model $MODEL not found — pass an exported .tflite or nothing" >&2
  exit 2
fi
FRAMEWORK=/usr/share/android-framework-res/framework-res.apk
for tool in javac jar mvn aapt zipalign apksigner keytool; do
  if ! command -v "$tool" >/dev/null; then
    echo "build_apk.sh: $tool not found — apt-get install aapt android-framework-res zipalign apksigner (and a JDK, Maven)" >&2
    exit 3
  fi
done
if [ ! -f "$FRAMEWORK" ]; then
  echo "build_apk.sh: $FRAMEWORK not found — apt-get install android-framework-res" >&2
  exit 3
fi

# The versions the APK is built from: the ones the Maven build (and so the JVM tests) use.
pom_property() {  # the value of <$1> in the POM $2
  sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$2"
}
TFLITE=$(pom_property tflite.version aar-classes/pom.xml)
GSON=$(pom_property gson.version pom.xml)
ANDROID_ALL=$(pom_property android.all.version app/pom.xml)
DX=14.0.0_r21
MIN_SDK=24
TARGET_SDK=35
VERSION_CODE=1
VERSION_NAME=0.1.0

B=$HERE/build
DEPS=$B/deps
rm -rf "$B/classes" "$B/gen" "$B/stage" "$B/unpacked" "$B"/*.apk
mkdir -p "$DEPS" "$B/classes" "$B/stage/lib/arm64-v8a" "$B/unpacked"

fetch() {  # group:artifact:version[:type] into $DEPS (Maven's local repository caches it)
  local ga=(${1//:/ })
  [ -f "$DEPS/${ga[1]}-${ga[2]}.${ga[3]:-jar}" ] && return
  mvn -B -q -N org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy -Dartifact="$1" \
    -DoutputDirectory="$DEPS" -Dmdep.overWriteReleases=false >/dev/null
}
fetch org.tensorflow:tensorflow-lite:$TFLITE:aar
fetch org.tensorflow:tensorflow-lite-api:$TFLITE:aar
fetch com.google.code.gson:gson:$GSON
fetch org.robolectric:android-all:$ANDROID_ALL
fetch com.jakewharton.android.repackaged:dalvik-dx:$DX

# The AARs' classes and the arm64 runtime.
for aar in tensorflow-lite tensorflow-lite-api; do
  mkdir -p "$B/unpacked/$aar"
  (cd "$B/unpacked/$aar" && jar xf "$DEPS/$aar-$TFLITE.aar")
done
cp "$B/unpacked/tensorflow-lite/jni/arm64-v8a/libtensorflowlite_jni.so" "$B/stage/lib/arm64-v8a/"
LIBS="$B/unpacked/tensorflow-lite/classes.jar:$B/unpacked/tensorflow-lite-api/classes.jar:$DEPS/gson-$GSON.jar"

# The manifest with the package, versions and SDK levels the Gradle build adds; R.java of the resources.
sed 's|<manifest xmlns:android="http://schemas.android.com/apk/res/android"|& package="org.tftl.app"|' \
  app/src/main/AndroidManifest.xml >"$B/AndroidManifest.xml"
mkdir -p "$B/gen"
aapt package -f -m -J "$B/gen" -M "$B/AndroidManifest.xml" -S app/src/main/res -I "$FRAMEWORK"

# Java 8 bytecode against the framework classes; android-all is compile-only (the phone has it).
find core/src/main/java app/src/main/java "$B/gen" -name '*.java' >"$B/sources.txt"
javac --release 8 -nowarn -encoding UTF-8 -d "$B/classes" \
  -cp "$DEPS/android-all-$ANDROID_ALL.jar:$LIBS" @"$B/sources.txt" 2>&1 | { grep -v '^Note:' || true; }
# Gson's classes without its META-INF (module-info is Java 9 bytecode, which dx refuses).
mkdir -p "$B/unpacked/gson" && (cd "$B/unpacked/gson" && jar xf "$DEPS/gson-$GSON.jar" && rm -rf META-INF)
java -cp "$DEPS/dalvik-dx-$DX.jar" com.android.dx.command.Main --dex --min-sdk-version=$MIN_SDK --output="$B/stage/classes.dex" \
  "$B/classes" "$B/unpacked/gson" "$B/unpacked/tensorflow-lite/classes.jar" \
  "$B/unpacked/tensorflow-lite-api/classes.jar"

ASSETS=()
if [ -n "$MODEL" ]; then
  mkdir -p "$B/assets" && cp "$MODEL" "$B/assets/model.tflite"
  ASSETS=(-A "$B/assets")
else
  rm -rf "$B/assets"
fi
aapt package -f -M "$B/AndroidManifest.xml" -S app/src/main/res -I "$FRAMEWORK" "${ASSETS[@]}" \
  --min-sdk-version $MIN_SDK --target-sdk-version $TARGET_SDK \
  --version-code $VERSION_CODE --version-name $VERSION_NAME --debug-mode -0 tflite -F "$B/unsigned.apk"
(cd "$B/stage" && aapt add -f "$B/unsigned.apk" classes.dex lib/arm64-v8a/libtensorflowlite_jni.so >/dev/null)
zipalign -f -p 4 "$B/unsigned.apk" "$B/aligned.apk"

KEYSTORE=$B/debug.keystore
if [ ! -f "$KEYSTORE" ]; then
  keytool -genkeypair -keystore "$KEYSTORE" -storepass android -keypass android -alias androiddebugkey \
    -keyalg RSA -keysize 2048 -validity 10000 -dname "CN=Android Debug,O=Android,C=US" >/dev/null 2>&1
fi
apksigner sign --ks "$KEYSTORE" --ks-pass pass:android --key-pass pass:android --ks-key-alias androiddebugkey \
  --min-sdk-version $MIN_SDK --out "$B/tftl-demo-debug.apk" "$B/aligned.apk"
rm -f "$B/unsigned.apk" "$B/aligned.apk" "$B/tftl-demo-debug.apk.idsig"
apksigner verify "$B/tftl-demo-debug.apk"
zipalign -c -p 4 "$B/tftl-demo-debug.apk"
echo "built $B/tftl-demo-debug.apk ($(stat -c %s "$B/tftl-demo-debug.apk") bytes)"
