"""Posts an order and reads it back with the client openapi-python-client
generated from docs/openapi.json (on PYTHONPATH), at
the API whose URL is the first argument; prints the order read back."""

import json
import sys

from orders_client import Client
from orders_client.api.orders import create_order, get_order
from orders_client.models import LineItemRequest, OrderRequest

client = Client(base_url=sys.argv[1], raise_on_unexpected_status=True)
sent = OrderRequest(
    customer_id="c-42",
    items=[LineItemRequest(sku="sku-1", quantity=2, unit_price_cents=1250)],
)
created = create_order.sync_detailed(client=client, body=sent, idempotency_key='"key-1"')
assert created.status_code == 201, created
order = get_order.sync(client=client, id=created.parsed.id)
assert created.headers["location"] == f"/orders/{order.id}"
assert order.customer_id == sent.customer_id
assert [item.to_dict() for item in order.items] == [item.to_dict() for item in sent.items]
assert (order.total_cents, order.status.value) == (2500, "pending")
print(json.dumps(order.to_dict()))
