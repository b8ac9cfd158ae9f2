#!/usr/bin/env bash
# Copies Swagger UI and ReDoc, at the versions package-lock.json pins, into static/ beside this
# script; commit what it writes. The services serve static/ at /static/docs, and pyproject's
# package-data puts it in the wheel, so neither `make run`, the tests nor the Docker image needs
# npm or the internet. To move to a newer release: change the range in package.json, run
# `npm install --package-lock-only` here, then this script.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/package.json" "$here/package-lock.json" "$here/.npmrc" "$work/"
# --ignore-scripts: the bundles are prebuilt; nothing from the registry runs here
(cd "$work" && npm ci --ignore-scripts --no-audit --no-fund --silent)

copy() {  # copy <package dir> <destination> <file>...
  local from="$work/node_modules/$1" to="$here/static/$2"
  shift 2
  rm -rf "$to" && mkdir -p "$to"
  for file in "$@"; do cp "$from/$file" "$to/"; done
}
copy swagger-ui-dist swagger-ui swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css \
  favicon-32x32.png LICENSE NOTICE
copy redoc redoc bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE
# ReDoc's "API docs by Redocly" footer loads its logo from Redocly's CDN, the one thing either
# page fetches from outside. An empty data: URL makes the image fail at once, and ReDoc then
# drops it (its onError); the footer's text and link stay. (MIT licence: modifying is allowed.)
sed -i 's#https://cdn\.redoc\.ly/redoc/logo-mini\.svg#data:,#' "$here/static/redoc/redoc.standalone.js"
echo "docs assets: swagger-ui-dist $(node -p "require('$work/node_modules/swagger-ui-dist/package.json').version")," \
  "redoc $(node -p "require('$work/node_modules/redoc/package.json').version") -> $here/static"
