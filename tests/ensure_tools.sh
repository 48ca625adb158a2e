#!/bin/sh
# System tools some tests use, installed by the project's own set-up (`make test`) when it can; never fails the
# build: without a tool, its tests are skipped with the reason.
#   openssh-server  the deploy tests' real SSH server (tests/sshd.py)
#   kotlin          compiles the Kotlin that `edgert export android` generates (tests/test_android.py)
#   libusb-1.0-0    needed by tflite-support, the independent metadata reader (tests/tflite_support.py)
# As root these come from apt; otherwise openssh-server is unpacked into build/openssh (a non-root sshd needs no
# system user) and the others are skipped.
have_sshd() { command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ]; }
have_libusb() { ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; }
command -v apt-get >/dev/null 2>&1 || { echo "ensure_tools: no apt-get; some tests will be skipped"; exit 0; }
if [ "$(id -u)" = 0 ]; then
    missing=""
    have_sshd || missing="$missing openssh-server"
    command -v kotlinc >/dev/null 2>&1 || missing="$missing kotlin"
    have_libusb || missing="$missing libusb-1.0-0"
    [ -z "$missing" ] && exit 0
    export DEBIAN_FRONTEND=noninteractive
    echo "ensure_tools: installing$missing"
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $missing >/dev/null 2>&1; } \
        || echo "ensure_tools: could not install$missing; their tests will be skipped"
    exit 0
fi
have_sshd && exit 0
[ -x build/openssh/usr/sbin/sshd ] && exit 0
mkdir -p build/openssh/debs
(cd build/openssh/debs && apt-get download openssh-server libwrap0 >/dev/null 2>&1) \
    && for deb in build/openssh/debs/*.deb; do dpkg-deb -x "$deb" build/openssh; done \
    || echo "ensure_tools: could not download openssh-server; deploy tests will be skipped"
exit 0
