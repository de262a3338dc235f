#!/usr/bin/env bash
# Fails when generated/ is not exactly what `buf generate` makes from node.proto today.
set -euo pipefail
cd "$(dirname "$0")/.."
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
npx buf generate -o "$fresh"
if ! diff -r generated "$fresh/generated" >/dev/null; then
  diff -r generated "$fresh/generated" | head -20
  echo "generated/ is stale: run 'npm run generate' and commit the result" >&2
  exit 1
fi
echo "generated/ is up to date"
