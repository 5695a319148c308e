//! What the shipped policies declare, snapshotted: `Schema::outline()` of `policies/` as
//! JSON (types with their actions and write rules, matrices with their rows and roles),
//! which the console builds its pages from. A change to it is a reviewed diff of
//! `snapshots/all__outline__shipped_policies.snap`.

#[test]
fn shipped_policies_outline() {
    let schema = crate::default_schema().unwrap_or_else(|e| panic!("{e}"));
    let mut outline = serde_json::to_value(schema.outline()).unwrap_or_else(|e| panic!("{e}"));
    // The hash changes with any edit of the policy text, comments and spacing included;
    // the snapshot is of what the policies declare.
    outline["policy_hash"] = "[the policies' SHA-256]".into();
    insta::assert_json_snapshot!("shipped_policies", outline);
}
