#!/usr/bin/env bash
# tests/gpu/fetch-debs.sh: downloads (on a Debian 12 machine with network) the packages that
# tests/gpu/run.sh unpacks on the GPU machine, whose image has no pkg-config, jansson, pcre2 or
# utf8proc and no network. They land in third_party/debs/ (git-ignored); carry that folder to the
# GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p third_party/debs
cd third_party/debs
apt-get download libjansson4 libjansson-dev pkgconf pkgconf-bin libpkgconf3 libpcre2-dev \
    libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3 libutf8proc-dev libutf8proc2
ls -1 "$PWD"
