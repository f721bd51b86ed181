//! The binary itself: migrate, the ranges subcommands, and start-up errors that name the fix.

use std::process::{Command, Output};

use serde_json::Value;

use crate::{
    poller::{poller, store},
    support::{admin_url, TestDb},
};

/// Runs `thryve-bridge args...` against `database_url`, from a directory without a `.env`.
pub fn bridge(database_url: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_thryve-bridge"));
    command
        .args(args)
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", database_url)
        .env_remove("WEBHOOK_BASIC_AUTH")
        .env_remove("WEBHOOK_AUTH_HEADER")
        .env_remove("WEBHOOK_ALLOW_UNAUTHENTICATED")
        .env_remove("BIND_ADDR");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

pub fn json_out(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[tokio::test]
async fn migrate_applies_the_schema_and_is_idempotent() {
    let db = TestDb::unmigrated().await;
    for _ in 0..2 {
        let out = json_out(&bridge(&db.url(), &["migrate"], &[]));
        assert_eq!(out["migrated"], true);
    }
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'thryve'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(tables >= 6, "{tables}");
}

#[tokio::test]
async fn ranges_commands_claim_complete_and_fail_by_hand() {
    let db = TestDb::new().await;
    store(
        &db,
        &[
            crate::support::epoch_notification(
                "cli-a",
                1_700_000_000_000,
                1_700_000_060_000,
                &[1000],
            ),
            crate::support::epoch_notification(
                "cli-b",
                1_700_000_000_000,
                1_700_000_060_000,
                &[1000],
            ),
        ],
    )
    .await;
    poller(&db).drain().await.unwrap();
    let url = db.url();

    let claimed = json_out(&bridge(
        &url,
        &["ranges", "claim", "--worker", "sh-1", "--max", "2"],
        &[],
    ));
    let claimed = claimed.as_array().unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        claimed[0]["thryve_request"]["path"],
        "/v5/dynamicEpochValues"
    );
    assert_eq!(
        claimed[0]["thryve_request"]["body"]["startTimestampUnix"],
        1_700_000_000_000_i64
    );
    let (a, b) = (claimed[0]["id"].to_string(), claimed[1]["id"].to_string());

    let done = json_out(&bridge(
        &url,
        &["ranges", "complete", &a, "--worker", "sh-1"],
        &[],
    ));
    assert_eq!(done["completed"], true);
    let refused = bridge(
        &url,
        &["ranges", "complete", &b, "--worker", "someone-else"],
        &[],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not hold its claim"));
    let failed = json_out(&bridge(
        &url,
        &[
            "ranges",
            "fail",
            &b,
            "--worker",
            "sh-1",
            "--error",
            "502 from Thryve",
            "--retry-in-secs",
            "0",
        ],
        &[],
    ));
    assert_eq!(failed["failed"], true);

    let pending = json_out(&bridge(
        &url,
        &["ranges", "list", "--status", "pending"],
        &[],
    ));
    assert_eq!(pending.as_array().unwrap().len(), 1);
    assert_eq!(pending[0]["last_error"], "502 from Thryve");
    let done = json_out(&bridge(&url, &["ranges", "list", "--status", "done"], &[]));
    assert_eq!(done[0]["end_user_id"], claimed[0]["end_user_id"]);
}

#[test]
fn serve_without_credentials_refuses_to_start_naming_the_fix() {
    let out = bridge(&admin_url(), &["serve"], &[("BIND_ADDR", "127.0.0.1:0")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: WEBHOOK_BASIC_AUTH: no webhook credential configured"),
        "{stderr}"
    );
    assert!(last.contains("WEBHOOK_ALLOW_UNAUTHENTICATED=true"));
}

#[test]
fn a_bad_setting_names_its_variable() {
    let out = bridge(
        &admin_url(),
        &["serve"],
        &[
            ("BIND_ADDR", "not-an-address"),
            ("WEBHOOK_BASIC_AUTH", "a:b"),
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("BIND_ADDR"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bridge(
        &admin_url(),
        &["serve"],
        &[
            ("WEBHOOK_BASIC_AUTH", "no-colon-secret"),
            ("BIND_ADDR", "127.0.0.1:0"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WEBHOOK_BASIC_AUTH: entry 1"), "{stderr}");
    assert!(
        !stderr.contains("no-colon-secret"),
        "the secret is not echoed"
    );
}

#[test]
fn a_misspelt_status_is_refused_with_the_valid_ones() {
    for args in [
        &["ranges", "list", "--status", "faild"][..],
        &["inbox", "list", "--status", "quarantine"][..],
    ] {
        let out = bridge(&admin_url(), args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid value"), "{stderr}");
    }
    let stderr = String::from_utf8_lossy(
        &bridge(&admin_url(), &["ranges", "list", "--status", "faild"], &[]).stderr,
    )
    .into_owned();
    assert!(
        stderr.contains("[possible values: pending, claimed, done, failed]"),
        "{stderr}"
    );
}
