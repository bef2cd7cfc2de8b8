#!/usr/bin/env bash
# docs/operations.md stays true to the code: every option clipcapd --check-config prints
# (the option table in daemon/config.c) and every series daemon/operations.c declares has its
# entry there.
# Usage: docs_test.sh SOURCE_DIR CLIPCAPD
set -euo pipefail
source_dir=$1
clipcapd=$2
doc=$source_dir/docs/operations.md
missing=0
section=""
while IFS= read -r line; do
    case $line in
    \[*\]) section=${line#[}; section=${section%]} ;;
    *" = "*)
        key=${line%% = *}
        if ! grep -qF "\`$section.$key\`" "$doc"; then
            echo "docs/operations.md lacks option $section.$key" >&2
            missing=1
        fi
        ;;
    esac
done < <(env -i "$clipcapd" --check-config)
series=$(grep -o '"clipcap_[a-z_]*"' "$source_dir/daemon/operations.c" | tr -d '"' | sort -u)
[ -n "$series" ] || { echo "no series found in daemon/operations.c" >&2; exit 1; }
for name in $series; do
    if ! grep -qF "\`$name" "$doc"; then
        echo "docs/operations.md lacks series $name" >&2
        missing=1
    fi
done
[ $missing = 0 ] || exit 1
echo "docs: $(echo "$series" | wc -l) series and every option documented"
