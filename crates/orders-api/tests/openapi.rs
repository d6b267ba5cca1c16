//! The OpenAPI document: served, kept in docs/openapi.json, and what
//! docs/http-api.md says of fields, rules and codes.

#![allow(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::spawn_app;
use expect_test::expect_file;
use orders_api::error::ErrorCode;
use serde_json::Value;
use sqlx::PgPool;

/// Fails when the code's document and docs/openapi.json differ;
/// `UPDATE_EXPECT=1` rewrites the file.
#[sqlx::test(migrator = "orders::db::MIGRATOR")]
async fn serves_its_openapi_document_which_docs_openapi_json_is(pool: PgPool) {
    let app = spawn_app(pool).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    let pretty = serde_json::to_string_pretty(&served).unwrap();
    expect_file!["../../../docs/openapi.json"].assert_eq(&format!("{pretty}\n"));
}

/// docs/http-api.md's rules and error codes, checked against the document
/// (every field's range, no other fields) and the code (every `code` of the
/// enum has a row, with the status the API answers it with); so are the
/// codes the document's error answers name.
#[test]
fn http_api_md_states_the_documents_rules_and_codes() {
    let root = orders_test_support::repository_root();
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    let document: Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    let guide = read("docs/http-api.md");

    let schemas = &document["components"]["schemas"];
    let mut rules = BTreeMap::new();
    for schema in [&schemas["OrderRequest"], &schemas["LineItemRequest"]] {
        assert_eq!(schema["additionalProperties"], false);
        for (field, rule) in schema["properties"].as_object().unwrap() {
            let range = [
                ("minLength", "maxLength"),
                ("minItems", "maxItems"),
                ("minimum", "maximum"),
            ];
            let (low, high) = range
                .into_iter()
                .find(|(low, _)| rule.get(low).is_some())
                .unwrap();
            rules.insert(field.clone(), format!("{} to {}", rule[low], rule[high]));
        }
    }
    let stated: BTreeMap<String, String> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("- `"))
        .filter_map(|rule| rule.split_once("`: "))
        .map(|(field, rule)| {
            (
                field.to_owned(),
                rule.split([' ', ';', ','])
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        })
        .collect();
    assert_eq!(stated, rules);
    assert!(guide.contains("\n- no other fields.\n"));

    let rows: BTreeSet<(u16, ErrorCode)> = guide
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|row| row.split_once(" | "))
        .filter_map(|(status, rest)| Some((status.parse().ok()?, rest.split(" | ").next()?)))
        .flat_map(|(status, cell)| codes(cell).map(move |code| (status, code)))
        .collect();
    let enumerated: Vec<ErrorCode> =
        serde_json::from_value(schemas["ErrorCode"]["enum"].clone()).unwrap();
    let answered: BTreeSet<(u16, ErrorCode)> = enumerated
        .into_iter()
        .map(|code| (code.status().as_u16(), code))
        .collect();
    assert_eq!(rows, answered);

    for (path, operations) in document["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                for code in codes(response["description"].as_str().unwrap()) {
                    assert_eq!(code.status().as_str(), status, "{method} {path}: {code:?}");
                }
            }
        }
    }
}

/// The error codes named in `text`, each between backticks.
fn codes(text: &str) -> impl Iterator<Item = ErrorCode> + '_ {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|name| serde_json::from_value(Value::from(name)).ok())
}
