//! Reconciling a stored order: the batch's unit of work.
//!
//! The batch recomputes each order's total from its stored line items and
//! compares it with the stored total. The check is deliberately independent of
//! orders-api: the items are read back from the database, not trusted from the
//! request that wrote them.

use crate::order::LineItem;

/// Why an order did not reconcile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// The stored `items` are not a list of line items.
    #[error("stored items are unreadable: {0}")]
    UnreadableItems(String),
    /// The line items add up to more than a total can hold.
    #[error("the line items' total overflows")]
    TotalOverflow,
    /// The stored total is not the sum of the line items.
    #[error("stored total {stored} cents differs from the line items' total {computed} cents")]
    TotalMismatch { stored: i64, computed: i64 },
}

impl ReconcileError {
    /// A short, stable identifier for the `error.type` span attribute.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnreadableItems(_) => "unreadable_items",
            Self::TotalOverflow => "total_overflow",
            Self::TotalMismatch { .. } => "total_mismatch",
        }
    }
}

/// Checks an order's stored total against its stored line items (the JSONB
/// `items` column as text), returning the total.
pub fn reconcile(items: &str, stored_total_cents: i64) -> Result<i64, ReconcileError> {
    let items = serde_json::from_str::<Vec<LineItem>>(items)
        .map_err(|error| ReconcileError::UnreadableItems(error.to_string()))?;
    let computed = items.iter().try_fold(0_i64, |total, item| {
        item.quantity
            .checked_mul(item.unit_price_cents)
            .and_then(|line| total.checked_add(line))
            .ok_or(ReconcileError::TotalOverflow)
    })?;
    if computed == stored_total_cents {
        Ok(computed)
    } else {
        Err(ReconcileError::TotalMismatch {
            stored: stored_total_cents,
            computed,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{ReconcileError, reconcile};

    #[test]
    fn matching_total_reconciles() {
        let items = json!([
            {"sku": "A-1", "quantity": 2, "unit_price_cents": 1250},
            {"sku": "B-2", "quantity": 1, "unit_price_cents": 99},
        ]);
        assert_eq!(reconcile(&items.to_string(), 2599), Ok(2599));
    }

    #[test]
    fn differing_total_is_a_mismatch() {
        let items = json!([{"sku": "A-1", "quantity": 3, "unit_price_cents": 100}]);
        let error = reconcile(&items.to_string(), 200).unwrap_err();
        assert_eq!(
            error,
            ReconcileError::TotalMismatch {
                stored: 200,
                computed: 300
            }
        );
        assert_eq!(error.kind(), "total_mismatch");
        assert_eq!(
            error.to_string(),
            "stored total 200 cents differs from the line items' total 300 cents"
        );
    }

    #[test]
    fn unreadable_items_and_overflow_are_reported() {
        let error = reconcile(&json!({"sku": "A-1"}).to_string(), 0).unwrap_err();
        assert_eq!(error.kind(), "unreadable_items");
        let error = reconcile(&json!([{"sku": "A-1", "quantity": 1}]).to_string(), 0).unwrap_err();
        assert!(error.to_string().contains("unit_price_cents"), "{error}");
        let huge = json!([{"sku": "A", "quantity": i64::MAX, "unit_price_cents": 2}]);
        assert_eq!(
            reconcile(&huge.to_string(), 0),
            Err(ReconcileError::TotalOverflow)
        );
    }
}
