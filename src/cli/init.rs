//! `init`: a local start in one command. Creates the database if it is missing, migrates it,
//! writes a `.env` with a generated credential (never over an existing one) and prints how to
//! send the first delivery.

use std::{io::Write, path::Path, str::FromStr};

use sqlx::{postgres::PgConnectOptions, ConnectOptions, Connection};

use super::common::CliError;
use crate::{config::DatabaseConfig, db};

/// The database `init` sets up when neither `DATABASE_URL` nor `.env` names one: the local
/// server as Debian and Homebrew install it, trust auth, a database of the bridge's own.
pub const LOCAL_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/thryve";

/// Every variable with its default and meaning; `init` fills in two of them.
const ENV_EXAMPLE: &str = include_str!("../../.env.example");

/// The user name of the credential `init` generates; the password is random.
const GENERATED_USER: &str = "thryve";

pub(super) async fn run(database: &DatabaseConfig, env_file: &Path) -> Result<(), CliError> {
    let url = match &database.database_url {
        Some(url) => url.expose().to_owned(),
        None => LOCAL_DATABASE_URL.to_owned(),
    };
    let created = create_database_if_missing(&url).await?;
    let pool = db::pool(&url, 2, std::time::Duration::from_secs(30)).map_err(CliError::Pool)?;
    db::migrate(&pool).await?;
    let status = db::migration_status(&pool).await?;
    pool.close().await;

    let credential = credential(env_file, &url)?;
    let database_name = PgConnectOptions::from_str(&url)
        .ok()
        .and_then(|o| o.get_database().map(str::to_owned))
        .unwrap_or_default();
    println!(
        "database {database_name}: {}, {} migrations applied",
        if created { "created" } else { "exists" },
        status.applied.len()
    );
    println!();
    print_first_delivery(credential.as_deref());
    Ok(())
}

/// The credential to show in the first delivery: the first of `WEBHOOK_BASIC_AUTH` when
/// `env_file` exists already (it is kept), else a generated one, written with `url` into a new
/// `env_file`.
fn credential(env_file: &Path, url: &str) -> Result<Option<String>, CliError> {
    let credential = if env_file.exists() {
        println!(
            "kept {}: it exists already (delete it to have init write a new one)",
            env_file.display()
        );
        std::env::var("WEBHOOK_BASIC_AUTH")
            .ok()
            .and_then(|list| list.split(',').next().map(str::to_owned))
            .filter(|c| !c.is_empty())
    } else {
        let credential = format!(
            "{GENERATED_USER}:{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        write_env_file(env_file, url, &credential)?;
        println!(
            "wrote {} (DATABASE_URL and a generated WEBHOOK_BASIC_AUTH; every other line is a default)",
            env_file.display()
        );
        Some(credential)
    };
    Ok(credential)
}

/// How to start the bridge and send it a first delivery, with `credential` if known.
fn print_first_delivery(credential: Option<&str>) {
    // As the user invoked it (`target/release/thryve-bridge`, or on the PATH).
    let program = std::env::args()
        .next()
        .unwrap_or_else(|| "thryve-bridge".into());
    let port = std::env::var("BIND_ADDR")
        .ok()
        .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
        .map_or(8080, |a| a.port());
    println!("Next: start the bridge, then send it a first delivery from another shell:");
    println!("  {program} serve");
    let auth = match credential {
        Some(credential) => format!(" -u '{credential}'"),
        None => String::new(),
    };
    println!(
        "  curl -sS{auth} -H 'content-type: application/json' http://127.0.0.1:{port}/webhooks/thryve \\\n    \
         -d '{{\"endUserId\":\"u1\",\"timestampType\":\"unix\",\"type\":\"notification.data.epoch.createupdate\",\
         \"data\":{{\"startTimestamp\":1763973390000,\"endTimestamp\":1763973390000,\"dataSourceId\":8,\"dataTypeIds\":[3000]}}}}'"
    );
    println!("In Thryve's dashboard, set the webhook's web authentication to the same user and password.");
}

/// Connects to `url`; when the server says the database does not exist (3D000), connects to
/// the server's `postgres` database and creates it. Returns whether it created one.
async fn create_database_if_missing(url: &str) -> Result<bool, CliError> {
    let options = PgConnectOptions::from_str(url).map_err(CliError::Pool)?;
    match options.connect().await {
        Ok(conn) => {
            conn.close().await.ok();
            return Ok(false);
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {}
        Err(e) => return Err(CliError::Pool(e)),
    }
    let name = options
        .get_database()
        .ok_or_else(|| CliError::Failed("DATABASE_URL names no database".into()))?
        .to_owned();
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(CliError::Pool)?;
    // A name cannot be a bind parameter; quoted as an identifier, any name is one name.
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    sqlx::query(&format!("CREATE DATABASE {quoted}"))
        .execute(&mut admin)
        .await?;
    admin.close().await.ok();
    Ok(true)
}

/// `.env.example` with `DATABASE_URL` and `WEBHOOK_BASIC_AUTH` filled in, created only if the
/// file does not exist (so a race with another `init` cannot overwrite either), readable by
/// its owner only since it holds a credential.
fn write_env_file(path: &Path, url: &str, credential: &str) -> Result<(), CliError> {
    let contents: String = ENV_EXAMPLE
        .lines()
        .map(|line| {
            if line.starts_with("DATABASE_URL=") {
                format!("DATABASE_URL={url}\n")
            } else if line.starts_with("WEBHOOK_BASIC_AUTH=") {
                format!("WEBHOOK_BASIC_AUTH={credential}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let what = || format!("writing {}", path.display());
    let mut file = options.open(path).map_err(CliError::file(what()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(CliError::file(what()))
}
