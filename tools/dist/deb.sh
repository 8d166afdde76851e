#!/usr/bin/env bash
# Builds the Debian package target/debian/graspd_*.deb (see
# [package.metadata.deb] in tools/Cargo.toml): the release binaries, the
# man pages and completions from grasp-docs (man pages gzipped, as Debian
# wants), with cargo-deb (installed into ~/.cargo when missing).
#
#   tools/dist/deb.sh            then: apt install ./target/debian/graspd_*.deb
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo-deb >/dev/null || cargo install -q --locked cargo-deb
cargo build --release -q -p grasp-tools --bin graspd --bin grasp --bin quadsmaker --bin grasp-ca --bin grasp-docs
rm -rf target/docs
target/release/grasp-docs target/docs
gzip -9n target/docs/man/man*/*
cargo deb -q -p grasp-tools --no-build
ls target/debian/graspd_*.deb
