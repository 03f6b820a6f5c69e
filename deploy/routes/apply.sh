#!/bin/sh
# PUT every route in this directory (ID.json -> /apisix/admin/routes/ID) with curl, for those who
# do not want the CLI. The JSON files are generated from ../routes.yaml by
#   apisix-openai-triton routes export deploy/routes.yaml --out deploy/routes
# Usage: APISIX_ADMIN_KEY=... [APISIX_ADMIN_URL=http://127.0.0.1:9180] deploy/routes/apply.sh
set -eu

: "${APISIX_ADMIN_KEY:?set APISIX_ADMIN_KEY to the gateway's admin key (deployment.admin.admin_key)}"
url="${APISIX_ADMIN_URL:-http://127.0.0.1:9180}"
url="${url%/}"
dir="$(cd "$(dirname "$0")" && pwd)"
answer="$(mktemp)"
trap 'rm -f "$answer"' EXIT

status=0
for file in "$dir"/*.json; do
    id="$(basename "$file" .json)"
    code="$(curl -sS -o "$answer" -w '%{http_code}' -X PUT "$url/apisix/admin/routes/$id" \
        -H "X-API-KEY: $APISIX_ADMIN_KEY" -H 'Content-Type: application/json' \
        --data-binary @"$file")" || { echo "route $id: cannot reach $url" >&2; exit 3; }
    case "$code" in
        200) echo "updated route $id ($code)" ;;
        201) echo "created route $id ($code)" ;;
        *) echo "route $id: the Admin API answered $code: $(cat "$answer")" >&2; status=5 ;;
    esac
done
exit "$status"
