//! The binary itself: migrate, the ranges subcommands, and start-up errors that name the fix.

use std::process::{Command, Output};

use serde_json::Value;
use sqlx::Connection;

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

#[tokio::test]
async fn migrate_check_tells_an_empty_a_current_and_a_newer_database_apart_and_changes_nothing() {
    let db = TestDb::unmigrated().await;
    let check = |db: &TestDb| {
        let out = bridge(&db.url(), &["migrate", "--check"], &[]);
        let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let embedded = thryve_bridge::db::MIGRATOR.iter().count();

    let (code, report, stderr) = check(&db);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["up_to_date"], false);
    assert_eq!(report["pending"].as_array().unwrap().len(), embedded);
    assert!(
        stderr.contains("pending: run `thryve-bridge migrate`"),
        "{stderr}"
    );
    let recorded: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!recorded, "--check created the migrations table");

    json_out(&bridge(&db.url(), &["migrate"], &[]));
    let (code, report, stderr) = check(&db);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(report["up_to_date"], true);
    assert_eq!(report["applied"].as_array().unwrap().len(), embedded);
    assert_eq!(report["pending"], serde_json::json!([]));

    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (29991231000000, 'from a newer bridge', true, '\\x00', 1)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let (code, report, stderr) = check(&db);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["unknown"][0]["version"], 29991231000000_i64);
    assert!(stderr.contains("does not know"), "{stderr}");
}

#[tokio::test]
async fn init_creates_the_database_migrates_and_writes_a_private_env_once() {
    // A database name of the test's own that does not exist yet; `init` must create it.
    let name = format!("thryve_init_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let init = || {
        Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
            .arg("init")
            .current_dir(&dir)
            .env_clear()
            .env("DATABASE_URL", &url)
            .output()
            .expect("the binary runs")
    };

    let first = init();
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let env = std::fs::read_to_string(dir.join(".env")).unwrap();
    assert!(env.contains(&format!("DATABASE_URL={url}\n")), "{env}");
    let credential = env
        .lines()
        .find_map(|l| l.strip_prefix("WEBHOOK_BASIC_AUTH="))
        .expect("a credential line");
    let (user, password) = credential.split_once(':').expect("user:password");
    assert_eq!(user, "thryve");
    assert_eq!(password.len(), 64, "{password}");
    assert!(stdout.contains(&format!("-u '{credential}'")), "{stdout}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(".env"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the .env holds a credential: {mode:o}");
    }
    let check = bridge(&url, &["migrate", "--check"], &[]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let second = init();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("kept .env"));
    assert_eq!(std::fs::read_to_string(dir.join(".env")).unwrap(), env);

    let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
