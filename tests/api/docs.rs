//! The docs run as written: every block marked `runnable` in the README and in `docs/` is run,
//! in page order, by one bash session against the real binary and a database of the test's
//! own, the way a reader following the pages would; and every relative link resolves.
//!
//! What the harness does that a reader does not, and why:
//! - `cargo build ...` lines are skipped: the test runs the binary `cargo test` built, linked
//!   as `target/release/thryve-bridge` (and on `PATH` as `thryve-bridge`) in a scratch
//!   directory that holds `tests/`, `examples/` and `.env.example` of the repository, so no
//!   developer's `.env` is read or written.
//! - `DATABASE_URL` names a database that does not exist yet (`init` creates it), and
//!   `BIND_ADDR` a free port, which replaces `8080` in the pages' URLs: tests run in parallel.
//! - A line that runs `thryve-bridge serve` starts it in the background and waits for
//!   `/readyz`, as a reader opening a second shell would.
//! - Before each block after that, it waits until the serving poller has processed every
//!   inbox row (it takes them as they commit; a reader is slower than that).
//! - Thryve's data API is a fake of the test's own (`THRYVE_API_URL` and the four credentials
//!   in the environment), answering with the answers `docs/fetcher.md` shows.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    fake_thryve::{user_information, FakeThryve, Reply},
    support::{admin_url, blocks, drop_as_admin, read_doc, Block},
};

/// The data API's answers `docs/fetcher.md` shows: epoch first, then daily.
fn documented_answers() -> (Value, Value) {
    let answers: Vec<Value> = blocks("docs/fetcher.md")
        .into_iter()
        .filter(|b| b.lang == "json")
        .map(|b| serde_json::from_str(&b.text).expect("the docs' answers are JSON"))
        .collect();
    assert_eq!(
        answers.len(),
        2,
        "docs/fetcher.md shows an epoch and a daily answer"
    );
    (answers[0].clone(), answers[1].clone())
}

/// A fake Thryve answering as the docs show, and every user connected to source 8.
async fn documented_thryve() -> FakeThryve {
    let (epoch, daily) = documented_answers();
    FakeThryve::start(move |_, seen| match seen.path.as_str() {
        "/v5/dynamicEpochValues" => Reply::ok(epoch.clone()),
        "/v5/dailyDynamicValues" => Reply::ok(daily.clone()),
        _ => Reply::ok(user_information(
            seen.field("authenticationToken").unwrap_or_default(),
            &[8],
        )),
    })
    .await
}

#[test]
fn the_data_api_answers_the_docs_show_are_read_whole_by_the_fetcher() {
    let (epoch, daily) = documented_answers();
    let epoch = thryve_bridge::thryve::api::epoch_values(epoch.to_string().as_bytes())
        .expect("the epoch answer reads");
    let daily = thryve_bridge::thryve::api::daily_values(daily.to_string().as_bytes())
        .expect("the daily answer reads");
    assert_eq!(
        (epoch.values.len(), daily.values.len()),
        (2, 1),
        "{epoch:?} {daily:?}"
    );
    assert!(
        epoch.values.iter().any(|v| v.end.is_none()),
        "the \"null\" end is no end"
    );
}

/// The pages with runnable blocks, in the order a reader meets them: the README first (it
/// sets up the database and the server and sends the deliveries the others look at).
const PAGES: &[&str] = &[
    "README.md",
    "docs/tables.md",
    "docs/values.md",
    "docs/consumer-api.md",
    "docs/fetcher.md",
    "docs/operations.md",
    "docs/deploy.md",
    "docs/configuration.md",
];

/// Every markdown page of the repository that a reader is pointed to.
fn pages() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<String> = [
        "README.md",
        "CONTRIBUTING.md",
        "CHANGELOG.md",
        "SECURITY.md",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for dir in ["docs", "bench", "examples/python", "examples/node"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        let mut found: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.ends_with(".md").then(|| format!("{dir}/{name}"))
            })
            .collect();
        found.sort();
        pages.extend(found);
    }
    pages
}

/// A free port on the loopback, for the bridge the pages start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One block as bash lines, with the substitutions the module's comment lists.
fn script_of(block: &Block, port: u16) -> String {
    let mut script = format!(
        "echo '== {}:{} ({})'\n[ -z \"${{SERVER:-}}\" ] || wait_processed\n",
        block.file, block.line, block.lang
    );
    match block.lang.as_str() {
        "sql" => {
            script += "psql -X -q -v ON_ERROR_STOP=1 \"$DATABASE_URL\" <<'DOCS_SQL'\n";
            script += &block.text;
            script += "DOCS_SQL\n";
        }
        "sh" => {
            for line in block.text.lines() {
                let line = line
                    .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
                    .replace("localhost:8080", &format!("127.0.0.1:{port}"));
                let code = line.split(" #").next().unwrap_or_default().trim_end();
                if line.trim_start().starts_with("cargo build") {
                    script += &format!(": built by cargo test, not here: {}\n", line.trim());
                } else if code.ends_with("thryve-bridge serve") {
                    script += &format!("{code} > serve.log 2>&1 & SERVER=$!; wait_ready\n");
                } else {
                    script += &line;
                    script += "\n";
                }
            }
        }
        other => panic!(
            "{}:{}: a runnable block must be sh or sql, not {other:?}",
            block.file, block.line
        ),
    }
    script
}

const PRELUDE: &str = r#"set -euo pipefail
wait_ready() {
    for _ in $(seq 1 300); do
        thryve-bridge healthcheck --url "http://$BIND_ADDR/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$SERVER" 2>/dev/null || { cat serve.log; echo 'serve exited' >&2; return 1; }
        sleep 0.1
    done
    cat serve.log; echo 'serve never became ready' >&2; return 1
}
wait_processed() {
    for _ in $(seq 1 300); do
        [ "$(psql -XAt "$DATABASE_URL" -c "SELECT count(*) FROM thryve.inbox WHERE status = 'pending'")" = 0 ] && return 0
        sleep 0.1
    done
    echo 'inbox rows still pending' >&2; return 1
}
trap 'kill "${SERVER:-}" 2>/dev/null || true' EXIT
"#;

/// The repository's parts the pages use, in a directory of the test's own.
fn scratch_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    for part in ["tests", "examples"] {
        std::os::unix::fs::symlink(root.join(part), dir.join(part)).unwrap();
    }
    std::fs::copy(root.join(".env.example"), dir.join(".env.example")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_thryve-bridge"),
        dir.join("target/release/thryve-bridge"),
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn every_runnable_block_of_the_readme_and_docs_runs_as_written() {
    for page in pages() {
        let marked = blocks(&page).into_iter().filter(|b| b.runnable).count();
        assert!(
            marked == 0 || PAGES.contains(&page.as_str()),
            "{page} has runnable blocks but is not in docs::PAGES"
        );
    }
    let name = format!("thryve_docs_{}", uuid::Uuid::new_v4().simple());
    let database_url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
    let port = free_port();
    let dir = scratch_dir(&name);
    let thryve = documented_thryve().await;

    let mut script = PRELUDE.to_owned();
    for page in PAGES {
        for block in blocks(page).iter().filter(|b| b.runnable) {
            script += &script_of(block, port);
        }
    }
    // DOCS_SHOW_OUTPUT=1 ends the script with a failure, so that what every block printed
    // is shown (a way to see real output before pasting it into a page).
    if std::env::var("DOCS_SHOW_OUTPUT").is_ok() {
        script += "exit 7\n";
    }
    let path = format!(
        "{}:{}",
        dir.join("target/release").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &dir)
        .env("LANG", "C.UTF-8")
        .env("DATABASE_URL", &database_url)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("THRYVE_API_URL", thryve.url())
        .env("THRYVE_API_USER", "partner")
        .env("THRYVE_API_PASSWORD", "partner-pw")
        .env("THRYVE_APP_ID", "app-id")
        .env("THRYVE_APP_SECRET", "app-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash runs");
    let output = tokio::task::spawn_blocking(move || {
        std::thread::scope(|scope| {
            let mut stdout = child.stdout.take().unwrap();
            let mut stderr = child.stderr.take().unwrap();
            let out = scope.spawn(move || {
                let mut text = String::new();
                stdout.read_to_string(&mut text).ok();
                text
            });
            let err = scope.spawn(move || {
                let mut text = String::new();
                stderr.read_to_string(&mut text).ok();
                text
            });
            // A page that hangs (a server never ready, a prompt) fails the test instead of CI.
            let deadline = Instant::now() + Duration::from_secs(300);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    child.kill().ok();
                    child.wait().ok();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            (status, out.join().unwrap(), err.join().unwrap())
        })
    })
    .await
    .unwrap();
    let (status, stdout, stderr) = output;
    let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
    drop_as_admin(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        status.is_some_and(|s| s.success()),
        "the pages' blocks failed ({status:?}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- serve.log\n{log}"
    );
    assert!(
        !log.contains("ERROR") && !log.contains("panicked"),
        "the server logged an error while the pages ran:\n{log}"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces
/// to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(page: &str) -> Vec<String> {
    let mut in_code = false;
    read_doc(page)
        .lines()
        .filter(|l| {
            in_code ^= l.starts_with("```");
            !in_code && l.starts_with('#')
        })
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_of_the_readme_and_docs_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut broken = Vec::new();
    for page in pages() {
        let text = read_doc(&page);
        let base = Path::new(&page).parent().unwrap_or(Path::new(""));
        let mut in_code = false;
        for line in text.lines() {
            in_code ^= line.starts_with("```");
            if in_code {
                continue;
            }
            for link in line.split("](").skip(1) {
                let target = link.split(')').next().unwrap_or_default();
                if target.starts_with("http") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
                let file_path = if file.is_empty() {
                    PathBuf::from(&page)
                } else {
                    base.join(file)
                };
                let normal: PathBuf = file_path.components().fold(PathBuf::new(), |mut p, c| {
                    match c {
                        std::path::Component::ParentDir => {
                            p.pop();
                        }
                        c => p.push(c),
                    }
                    p
                });
                if !root.join(&normal).exists() {
                    broken.push(format!("{page}: {target} (no {})", normal.display()));
                } else if !fragment.is_empty()
                    && normal.extension().is_some_and(|e| e == "md")
                    && !anchors(normal.to_str().unwrap()).contains(&fragment.to_owned())
                {
                    broken.push(format!("{page}: {target} (no heading #{fragment})"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
