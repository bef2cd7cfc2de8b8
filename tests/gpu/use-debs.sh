# tests/gpu/use-debs.sh: sourced by the GPU machine's scripts (tests/gpu/run.sh, run_fixtures.sh,
# bench/run_gpu.sh) from the repository root: `use_debs BUILD_DIR`. That machine's image has no
# pkg-config, jansson, pcre2 or utf8proc and no network; when they are missing, the Debian
# packages in third_party/debs/ (tests/gpu/fetch-debs.sh) are unpacked into BUILD_DIR/deps (never
# into /) and the compiler, linker and loader are pointed at them. Returns non-zero on failure.
use_debs() {
    if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists jansson libpcre2-8 libutf8proc 2>/dev/null; then
        return 0
    fi
    local deps="$PWD/$1/deps" deb pc
    echo "== unpacking pkg-config, jansson, pcre2 and utf8proc from third_party/debs into $deps"
    mkdir -p "$deps"
    for deb in third_party/debs/*.deb; do
        if command -v dpkg-deb >/dev/null 2>&1; then
            dpkg-deb -x "$deb" "$deps" || return 1
        else
            (cd "$deps" && ar p "$OLDPWD/$deb" data.tar.xz | tar -xJ) || return 1
        fi
    done
    for pc in "$deps"/usr/lib/*/pkgconfig/*.pc; do
        sed -i "s|^prefix=.*|prefix=$deps/usr|" "$pc"
    done
    export PATH="$deps/usr/bin:$PATH"
    export LD_LIBRARY_PATH="$(echo "$deps"/usr/lib/*-linux-gnu | tr ' ' ':')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export PKG_CONFIG_PATH="$(echo "$deps"/usr/lib/*/pkgconfig | tr ' ' ':')"
    export LIBRARY_PATH="$LD_LIBRARY_PATH"
    export CPATH="$deps/usr/include"
    [ -x "$deps/usr/bin/pkg-config" ] || ln -sf pkgconf "$deps/usr/bin/pkg-config"
}
