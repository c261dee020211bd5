#!/usr/bin/env bash
# Checks the shell scripts: syntax (bash -n) and, when installed, shellcheck.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for f in scripts/*.sh scripts/lib/*.sh .ci/run; do
    [ -f "$f" ] || continue
    bash -n "$f" || { echo "lint: syntax error in $f"; status=1; }
done
if command -v shellcheck >/dev/null 2>&1; then
    shellcheck -S warning scripts/*.sh scripts/lib/*.sh .ci/run || status=1
else
    echo "lint: shellcheck not installed; syntax checked only"
fi
for f in scripts/*.py; do
    [ -f "$f" ] || continue
    python3 -m py_compile "$f" || { echo "lint: $f does not compile"; status=1; }
done
exit $status
