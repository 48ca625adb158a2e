#!/bin/sh
# The deploy tests need a real OpenSSH server (tests/sshd.py). Installs Debian's openssh-server as root; otherwise
# unpacks the package into build/openssh (a non-root sshd needs no system user). Never fails the build: without a
# server the deploy tests are skipped with the reason.
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "ensure_sshd: no apt-get; deploy tests will be skipped"; exit 0; }
if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends openssh-server >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends openssh-server >/dev/null 2>&1; } \
        || echo "ensure_sshd: could not install openssh-server; deploy tests will be skipped"
    exit 0
fi
[ -x build/openssh/usr/sbin/sshd ] && exit 0
mkdir -p build/openssh/debs
(cd build/openssh/debs && apt-get download openssh-server libwrap0 >/dev/null 2>&1) \
    && for deb in build/openssh/debs/*.deb; do dpkg-deb -x "$deb" build/openssh; done \
    || echo "ensure_sshd: could not download openssh-server; deploy tests will be skipped"
exit 0
