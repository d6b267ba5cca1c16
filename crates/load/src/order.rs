//! The orders the load posts: valid, and different from one to the next, so
//! that the database and the traces see a spread of customers and sizes.

use serde_json::{Value, json};

const SKUS: [&str; 7] = [
    "BOOK-1", "MUG-2", "PEN-3", "LAMP-4", "DESK-5", "CHAIR-6", "INK-7",
];

/// Order number `n`: one of 1000 customers, 1 to 5 items.
#[must_use]
pub fn order(n: u64) -> Value {
    let items: Vec<Value> = (0..=n % 5)
        .map(|i| {
            json!({
                "sku": SKUS[usize::try_from((n + i) % 7).unwrap_or_default()],
                "quantity": 1 + (n * 7 + i) % 5,
                "unit_price_cents": 99 + (n * 37 + i * 101) % 20_000,
            })
        })
        .collect();
    json!({"customer_id": format!("customer-{}", n % 1000), "items": items})
}
