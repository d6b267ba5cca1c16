//! Orders and the rules a new order must satisfy.
//!
//! Validation lives here rather than in the HTTP layer so that every writer of
//! orders enforces the same limits and the batch can rely on them.

use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use span_links::StoredContext;

/// Longest accepted `customer_id`, in characters.
pub const MAX_CUSTOMER_ID_CHARS: usize = 64;
/// Most line items in one order.
pub const MAX_ITEMS: usize = 100;
/// Longest accepted `sku`, in characters.
pub const MAX_SKU_CHARS: usize = 64;
/// Largest quantity of one line item.
pub const MAX_QUANTITY: i64 = 10_000;
/// Largest unit price, in cents.
pub const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000;

/// An order as submitted, before validation.
//
// Numbers are `i64` so that out-of-range values reach `OrderRequest::validate`
// and get a message naming the field and its range, instead of a type error.
// The `schema` attributes state the same rules for the OpenAPI document (they
// take literals only; a test holds them to the constants above).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// 1 to 64 characters, none of them U+0000 (PostgreSQL cannot store it).
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000]*$")]
    pub customer_id: String,
    #[serde(deserialize_with = "objects")]
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<LineItemRequest>,
}

/// A `T` that must be written as a JSON object.
///
/// serde also accepts a JSON array for a struct, filling the fields by
/// position; for a public API that is a wrong type, not a shorthand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonObject<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for JsonObject<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(JsonObject)
    }
}

/// A list whose elements must be JSON objects (see [`JsonObject`]).
fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let objects = Vec::<JsonObject<T>>::deserialize(deserializer)?;
    Ok(objects.into_iter().map(|JsonObject(value)| value).collect())
}

/// A line item as submitted, before validation.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItemRequest {
    /// 1 to 64 characters, none of them U+0000.
    #[schema(min_length = 1, max_length = 64, pattern = "^[^\\u0000]*$")]
    pub sku: String,
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 1, maximum = 10_000)]
    pub quantity: i64,
    #[serde(deserialize_with = "integer")]
    #[schema(minimum = 0, maximum = 100_000_000)]
    pub unit_price_cents: i64,
}

/// A JSON integer, also when written with a zero fraction (`2.0`): JSON
/// Schema, and so the OpenAPI document, counts `2.0` as an integer.
fn integer<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct IntegerVisitor;

    impl Visitor<'_> for IntegerVisitor {
        type Value = i64;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an integer")
        }

        fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<i64, E> {
            i64::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
        }

        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_precision_loss,
            reason = "the value is whole and inside i64's range"
        )]
        fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<i64, E> {
            let whole = value.fract() == 0.0 && (i64::MIN as f64..i64::MAX as f64).contains(&value);
            if whole {
                Ok(value as i64)
            } else {
                Err(E::invalid_type(Unexpected::Float(value), &self))
            }
        }
    }

    deserializer.deserialize_i64(IntegerVisitor)
}

/// An order that passed validation and can be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    customer_id: String,
    items: Vec<LineItem>,
    total_cents: i64,
    idempotency_key: Option<String>,
}

/// One validated line item of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

/// One rule an order broke, with the JSON path of the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every rule an [`OrderRequest`] broke, in field order; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// The broken rules, in field order.
    #[must_use]
    pub fn fields(&self) -> &[FieldError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut separator = "";
        for error in &self.0 {
            write!(f, "{separator}{}: {}", error.field, error.message)?;
            separator = "; ";
        }
        Ok(())
    }
}

impl OrderRequest {
    /// Checks every rule and returns the order ready to store, or all broken rules.
    pub fn validate(self) -> Result<NewOrder, ValidationErrors> {
        let mut errors = Vec::new();
        let mut error = |field: String, message: String| errors.push(FieldError { field, message });

        check_length(
            "customer_id".to_owned(),
            &self.customer_id,
            MAX_CUSTOMER_ID_CHARS,
            &mut error,
        );
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            error(
                "items".to_owned(),
                format!(
                    "must be between 1 and {MAX_ITEMS} items long, got {}",
                    self.items.len()
                ),
            );
        }
        for (index, item) in self.items.iter().enumerate() {
            check_length(
                format!("items[{index}].sku"),
                &item.sku,
                MAX_SKU_CHARS,
                &mut error,
            );
            check_range(
                format!("items[{index}].quantity"),
                item.quantity,
                1,
                MAX_QUANTITY,
                &mut error,
            );
            check_range(
                format!("items[{index}].unit_price_cents"),
                item.unit_price_cents,
                0,
                MAX_UNIT_PRICE_CENTS,
                &mut error,
            );
        }

        if !errors.is_empty() {
            return Err(ValidationErrors(errors));
        }
        let items: Vec<LineItem> = self
            .items
            .into_iter()
            .map(|item| LineItem {
                sku: item.sku,
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            })
            .collect();
        Ok(NewOrder {
            customer_id: self.customer_id,
            total_cents: total_cents(&items),
            items,
            idempotency_key: None,
        })
    }
}

fn check_length(field: String, value: &str, max: usize, error: &mut impl FnMut(String, String)) {
    let length = value.chars().count();
    if length == 0 || length > max {
        error(
            field,
            format!("must be between 1 and {max} characters long, got {length}"),
        );
    } else if value.contains('\0') {
        // PostgreSQL stores no NUL in text or jsonb.
        error(field, "must not contain U+0000 (NUL)".to_owned());
    }
}

fn check_range(
    field: String,
    value: i64,
    min: i64,
    max: i64,
    error: &mut impl FnMut(String, String),
) {
    if !(min..=max).contains(&value) {
        error(
            field,
            format!("must be between {min} and {max}, got {value}"),
        );
    }
}

/// The total of a list of line items, in cents.
///
/// Validated items cannot overflow (100 items × 10 000 × 10⁸ < 2⁶³); the
/// saturation only guards data that bypassed validation.
#[must_use]
pub fn total_cents(items: &[LineItem]) -> i64 {
    items.iter().fold(0_i64, |total, item| {
        total.saturating_add(item.quantity.saturating_mul(item.unit_price_cents))
    })
}

impl NewOrder {
    #[must_use]
    pub fn customer_id(&self) -> &str {
        &self.customer_id
    }

    #[must_use]
    pub fn items(&self) -> &[LineItem] {
        &self.items
    }

    #[must_use]
    pub fn total_cents(&self) -> i64 {
        self.total_cents
    }

    /// The client's key for retrying this order safely, if it sent one.
    #[must_use]
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key.as_deref()
    }

    /// The order with the key a client sent to retry it safely.
    #[must_use]
    pub fn with_idempotency_key(self, idempotency_key: Option<String>) -> Self {
        Self {
            idempotency_key,
            ..self
        }
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stored, waiting for a batch.
    Pending,
    /// Claimed by a batch run.
    Processing,
    /// Reconciled by a batch.
    Processed,
    /// Gave up on after too many failed attempts.
    Failed,
}

impl OrderStatus {
    /// The value stored in the `status` column.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Processed => "processed",
            Self::Failed => "failed",
        }
    }

    /// Parses the value stored in the `status` column.
    #[must_use]
    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(Self::Pending),
            "processing" => Some(Self::Processing),
            "processed" => Some(Self::Processed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// The `process-batch` span that handled an order: the way back from an order
/// to its batch, which a span link (pointing the other way) cannot give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BatchSpan {
    pub trace_id: String,
    pub span_id: String,
    /// The span's sampled flag: whether it was recorded and exported. With
    /// link-aware sampling, a batch of unsampled orders is not. Unknown
    /// (`null`) for orders processed before the flag was stored.
    pub sampled: Option<bool>,
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: Uuid,
    pub customer_id: String,
    pub items: Vec<LineItem>,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub created_at: DateTime<Utc>,
    /// Trace context of the `receive-order` span, if one was recorded.
    pub source_trace: Option<StoredContext>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub processed_at: Option<DateTime<Utc>>,
    pub batch_span: Option<BatchSpan>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(customer_id: &str, items: Vec<LineItemRequest>) -> OrderRequest {
        OrderRequest {
            customer_id: customer_id.to_owned(),
            items,
        }
    }

    fn item(sku: &str, quantity: i64, unit_price_cents: i64) -> LineItemRequest {
        LineItemRequest {
            sku: sku.to_owned(),
            quantity,
            unit_price_cents,
        }
    }

    #[test]
    fn valid_order_gets_its_total() {
        let order = request("c-42", vec![item("a", 2, 1250), item("b", 1, 99)])
            .validate()
            .unwrap();
        assert_eq!(order.total_cents(), 2599);
        assert_eq!(order.items().len(), 2);
    }

    #[test]
    fn limits_are_inclusive() {
        let items = (0..MAX_ITEMS)
            .map(|_| {
                item(
                    &"s".repeat(MAX_SKU_CHARS),
                    MAX_QUANTITY,
                    MAX_UNIT_PRICE_CENTS,
                )
            })
            .collect();
        let order = request(&"é".repeat(MAX_CUSTOMER_ID_CHARS), items)
            .validate()
            .unwrap();
        assert_eq!(order.total_cents(), 100 * 10_000 * 100_000_000);
        assert!(request("c", vec![item("s", 1, 0)]).validate().is_ok());
    }

    #[test]
    fn the_openapi_schema_states_the_limits_validate_checks() {
        use utoipa::PartialSchema as _;
        let order = serde_json::to_value(OrderRequest::schema()).unwrap();
        let item = serde_json::to_value(LineItemRequest::schema()).unwrap();
        let (order, item) = (&order["properties"], &item["properties"]);
        let customer_id = &order["customer_id"];
        assert_eq!(customer_id["minLength"], 1);
        assert_eq!(customer_id["maxLength"], MAX_CUSTOMER_ID_CHARS);
        assert_eq!(order["items"]["minItems"], 1);
        assert_eq!(order["items"]["maxItems"], MAX_ITEMS);
        assert_eq!(item["sku"]["minLength"], 1);
        assert_eq!(item["sku"]["maxLength"], MAX_SKU_CHARS);
        assert_eq!(item["quantity"]["minimum"], 1);
        assert_eq!(item["quantity"]["maximum"], MAX_QUANTITY);
        assert_eq!(item["unit_price_cents"]["minimum"], 0);
        assert_eq!(item["unit_price_cents"]["maximum"], MAX_UNIT_PRICE_CENTS);
    }

    #[test]
    fn a_whole_number_written_with_a_fraction_is_an_integer() {
        let item = |quantity: &str| {
            let json = format!(r#"{{"sku": "s", "quantity": {quantity}, "unit_price_cents": 1}}"#);
            serde_json::from_str::<LineItemRequest>(&json).map(|item| item.quantity)
        };
        assert_eq!(item("2.0").unwrap(), 2);
        assert_eq!(item("-3.0").unwrap(), -3);
        assert!(item("2.5").is_err());
        assert!(item("1e300").is_err());
        assert!(item("18446744073709551615").is_err());
    }

    #[test]
    fn every_broken_rule_is_named_by_its_path() {
        let errors = request(
            "",
            vec![item("", 0, -1), item(&"s".repeat(65), 10_001, 100_000_001)],
        )
        .validate()
        .unwrap_err();
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "customer_id",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unit_price_cents",
                "items[1].sku",
                "items[1].quantity",
                "items[1].unit_price_cents",
            ]
        );
        assert!(
            errors
                .to_string()
                .starts_with("customer_id: must be between 1 and 64")
        );
    }

    #[test]
    fn nul_characters_are_refused_where_postgresql_cannot_store_them() {
        let errors = request("a\0", vec![item("s\0", 1, 1)])
            .validate()
            .unwrap_err();
        let fields: Vec<&str> = errors.fields().iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["customer_id", "items[0].sku"]);
        assert!(errors.fields()[0].message.contains("U+0000"));
    }

    #[test]
    fn item_count_is_bounded() {
        let none = request("c", vec![]).validate().unwrap_err();
        assert_eq!(none.fields()[0].field, "items");
        let too_many = request("c", (0..=MAX_ITEMS).map(|_| item("s", 1, 1)).collect())
            .validate()
            .unwrap_err();
        assert_eq!(too_many.fields()[0].field, "items");
        assert!(too_many.fields()[0].message.contains("got 101"));
    }

    #[test]
    fn status_round_trips_through_its_column_value() {
        for status in [
            OrderStatus::Pending,
            OrderStatus::Processing,
            OrderStatus::Processed,
            OrderStatus::Failed,
        ] {
            assert_eq!(OrderStatus::from_db(status.as_str()), Some(status));
        }
        assert_eq!(OrderStatus::from_db("lost"), None);
    }
}
