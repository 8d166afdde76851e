#!/usr/bin/env bash
# Builds the Debian package, installs it on this machine, checks what it
# installed (binaries, user, man pages, completions, the Wireshark plugin),
# runs graspd --check-config from the installed files (with a throwaway
# QUADS key), verifies the systemd unit, then purges the package and the
# key again. Root only; CI runs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "deb-check.sh: needs root (it installs the package)"; exit 1; }
if dpkg -s graspd >/dev/null 2>&1; then
  echo "deb-check.sh: graspd is installed on this machine already; not touching it"; exit 1
fi
tools/dist/deb.sh
deb=$(ls target/debian/graspd_*.deb | tail -1)
cleanup() {
  apt-get purge -y -qq graspd >/dev/null 2>&1 || true
  rm -f /etc/grasp/domain.key
  rmdir /etc/grasp 2>/dev/null || true
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "./$deb" >/dev/null
for f in /usr/sbin/graspd /usr/bin/grasp /usr/bin/quadsmaker /usr/bin/grasp-ca \
         /usr/share/man/man1/grasp-negotiate.1.gz /usr/share/man/man5/graspd.toml.5.gz \
         /usr/share/bash-completion/completions/grasp /usr/share/zsh/vendor-completions/_graspd \
         /usr/share/fish/vendor_completions.d/grasp.fish /usr/lib/systemd/system/graspd.service \
         /etc/grasp/graspd.toml; do
  [ -e "$f" ] || { echo "deb-check.sh: the package did not install $f"; exit 1; }
done
ls /usr/lib/*/wireshark/plugins/grasp.lua >/dev/null
getent passwd grasp >/dev/null || { echo "deb-check.sh: no grasp user"; exit 1; }
[ "$(stat -c %G /etc/grasp)" = grasp ] || { echo "deb-check.sh: /etc/grasp is not graspd's group's"; exit 1; }
GRASP_QUADS_PASSWORD=deb-check-password /usr/bin/quadsmaker new --domain ci --out /etc/grasp/domain.key >/dev/null
/usr/sbin/graspd --config /etc/grasp/graspd.toml --check-config | tail -1 | grep -qx "configuration OK" \
  || { /usr/sbin/graspd --config /etc/grasp/graspd.toml --check-config; exit 1; }
systemd-analyze verify /usr/lib/systemd/system/graspd.service
apt-get purge -y -qq graspd >/dev/null
for f in /usr/sbin/graspd /usr/share/man/man5/graspd.toml.5.gz /usr/lib/systemd/system/graspd.service; do
  [ ! -e "$f" ] || { echo "deb-check.sh: $f is still there after purge"; exit 1; }
done
echo "deb-check.sh: $deb installs, checks its configuration, verifies its unit and purges cleanly"
