#!/usr/bin/env bash
# The phone check of PHONE_CHECK.md, scripted with adb: install the debug APK, push a folder of
# photos per class, start the app, watch training (memory, the foreground service), kill the
# process mid-run and check the service resumes, pull the fine-tuned file the app shared, and score
# it with tftl-eval on a workstation. The taps (Gallery, Train, Share) are yours: the script waits.
#
# Usage: phone_check.sh TRAIN_DIR VAL_DIR [APK]
#   TRAIN_DIR, VAL_DIR  one sub-folder of photos per class (e.g. ../shared/data/flowers5/{train,val});
#   APK                 default build/tftl-demo-debug.apk (build_apk.sh MODEL.tflite bundles a model).
# Writes phone_check/ here: meminfo.txt, services.txt, personalised.tflite, eval.json, crashes.txt.
# Exit codes: 0 done, 2 bad arguments, 3 no adb or no phone.
set -euo pipefail
cd "$(dirname "$0")"
PKG=org.tftl.app
TRAIN=${1:-}
VAL=${2:-}
APK=${3:-build/tftl-demo-debug.apk}
if [ -z "$TRAIN" ] || [ -z "$VAL" ] || [ ! -d "$TRAIN" ] || [ ! -d "$VAL" ] || [ ! -f "$APK" ]; then
  echo "usage: phone_check.sh TRAIN_DIR VAL_DIR [APK] — folders of photos per class, and an APK from build_apk.sh" >&2
  exit 2
fi
TRAIN=$(realpath "$TRAIN")
VAL=$(realpath "$VAL")
command -v adb >/dev/null || { echo "phone_check.sh: adb not found — apt-get install adb" >&2; exit 3; }
[ "$(adb get-state 2>/dev/null)" = device ] || { echo "phone_check.sh: no phone — connect one with USB debugging on" >&2; exit 3; }
OUT=phone_check
mkdir -p "$OUT"
pause() { read -r -p "$1 — press Enter when done. "; }
app() { adb shell run-as "$PKG" "$@"; }  # the debug APK lets us read its private storage

echo "== install $APK ($(stat -c %s "$APK") bytes) on $(adb shell getprop ro.product.model) (API $(adb shell getprop ro.build.version.sdk))"
adb install -r "$APK"
adb logcat -b crash -c || true  # crashes.txt holds this session's only
echo "== push photos to /sdcard/Pictures/tftl/<class>/"
for cls in "$TRAIN"/*/; do
  name=$(basename "$cls")
  adb shell mkdir -p "/sdcard/Pictures/tftl/$name"
  adb push "$cls". "/sdcard/Pictures/tftl/$name/" >/dev/null
  adb shell am broadcast -a android.intent.action.MEDIA_SCANNER_SCAN_FILE -d "file:///sdcard/Pictures/tftl/$name" >/dev/null || true
done
adb shell am start -n "$PKG/.MainActivity" >/dev/null
pause "In the app: for each class, Gallery -> select all photos of Pictures/tftl/<class> (multi-select); rotate the phone once while photos are added"
echo "== stored features: $(app ls -l files/tftl/)"
pause "Set epochs to 6 and tap Train; leave the app (Home) and turn the screen off for a minute"
adb shell dumpsys meminfo "$PKG" >"$OUT/meminfo.txt"
adb shell dumpsys activity services "$PKG" >"$OUT/services.txt"
grep -q TrainingService "$OUT/services.txt" && echo "== the training service runs in the foreground" \
  || echo "!! no TrainingService in dumpsys: training is not running as a service" >&2
echo "== memory while training: $(grep -E 'TOTAL PSS|TOTAL:' "$OUT/meminfo.txt" | head -1)"
echo "== kill the process mid-run (as the system does under memory pressure)"
pid=$(adb shell pidof "$PKG" || true)
[ -n "$pid" ] && app kill -9 "$pid" || true
sleep 20
if adb shell pidof "$PKG" >/dev/null; then
  echo "== the process is back (START_STICKY): training continues from its step checkpoint"
else
  echo "!! the process did not come back within 20 s: open the app and check that Train says Continue" >&2
fi
pause "Wait until the notification disappears and the screen says done (training and validation accuracy); then tap Share fine-tuned model (any target)"
app cat cache/personalised.tflite >"$OUT/personalised.tflite"
echo "== pulled $OUT/personalised.tflite ($(stat -c %s "$OUT/personalised.tflite") bytes)"
adb logcat -d -b crash >"$OUT/crashes.txt" || true
if grep -q "$PKG" "$OUT/crashes.txt"; then
  echo "!! $PKG crashed during the check: see $OUT/crashes.txt (\"work on the main thread\" is the thread guard)" >&2
else
  echo "== no crash of $PKG in the crash log"
fi
command -v tftl-eval >/dev/null || { echo "tftl-eval not found — pip install -e . in the repository" >&2; exit 3; }
tftl-eval "$OUT/personalised.tflite" "$VAL" --json | tee "$OUT/eval.json"
