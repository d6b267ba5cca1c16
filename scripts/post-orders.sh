#!/usr/bin/env bash
# POSTs N sample orders (default 10) to orders-api and prints each created
# order as orders-api returned it (JSON with its id and trace_id).
#
#   scripts/post-orders.sh [N]
#   ORDERS_API_URL=http://127.0.0.1:3000 scripts/post-orders.sh 25
set -euo pipefail

count="${1:-10}"
url="${ORDERS_API_URL:-http://127.0.0.1:3000}"
if ! [[ "$count" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [N]   (N: how many orders, a positive whole number)" >&2
  exit 2
fi

skus=(BOOK-1 MUG-2 PEN-3 LAMP-4 DESK-5)
for ((i = 1; i <= count; i++)); do
  sku="${skus[$((i % ${#skus[@]}))]}"
  quantity=$((i % 3 + 1))
  unit_price_cents=$((500 + (i % 7) * 125))
  body=$(printf '{"customer_id":"customer-%d","items":[{"sku":"%s","quantity":%d,"unit_price_cents":%d}]}' \
    "$i" "$sku" "$quantity" "$unit_price_cents")
  response=$(curl --silent --show-error --fail-with-body \
    --header 'content-type: application/json' --data "$body" "$url/orders") || {
    echo "order $i refused: $response" >&2
    exit 1
  }
  echo "$response"
done
echo "posted $count orders to $url" >&2
