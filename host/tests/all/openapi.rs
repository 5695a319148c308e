//! The OpenAPI document, snapshotted: every route with its summary and body, as
//! `GET /v1/openapi.json` serves it. A change to the API's description is a reviewed diff
//! of `snapshots/all__openapi__document.snap`.

#[test]
fn openapi_document() {
    insta::assert_json_snapshot!("document", clearance_host::openapi::document());
}
