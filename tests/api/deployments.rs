//! Every deployment the repository ships, started as shipped: the real binary with exactly
//! the environment each gives it (compose's bridge; the Kubernetes migrate Job, receiver and
//! poller from their ConfigMap and example Secret; the docs' separate fetcher), each until
//! `/readyz` answers 200, or `migrate` exits 0.
//!
//! Two values are substituted, and only they: `DATABASE_URL`, because the hosts the
//! deployments name (`db`, `postgres`) do not resolve here, so each gets a database of the
//! test's own; and a fetcher's `THRYVE_API_URL`, pointed at the test's fake Thryve. The image's
//! `ENV` lines (Dockerfile, runtime stage) come first, as in a container. Each serves on the
//! port it ships with (8080), so they run one after another in one test.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use thryve_bridge::config::ServeConfig;
use yaml_rust2::{Yaml, YamlLoader};

use crate::{
    fake_thryve::{FakeThryve, Reply},
    support::{answer, epoch_push, receiver_only, spawn_app_with, thryve_wire, TestDb},
};

/// Where the docs show the separate fetcher.
const FETCHER_DOC: &str = "docs/fetcher.md";

type Env = BTreeMap<String, String>;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A scalar as the string a container's environment would hold.
fn scalar(value: &Yaml) -> String {
    match value {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The `ENV` lines of the image's runtime stage: every container starts with them.
fn image_env() -> Env {
    let dockerfile = read("Dockerfile");
    let runtime = &dockerfile[dockerfile.find("AS runtime").expect("a runtime stage")..];
    runtime
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("ENV KEY=value");
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// `NAME=value` lines of an env file, as compose's `env_file` reads them.
fn env_file(text: &str) -> Env {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// The compose `bridge` service: the image's environment, then `.env` as the README's first
/// step makes it (`.env.example` with WEBHOOK_BASIC_AUTH set), then its `environment`.
fn compose_bridge() -> (Env, Vec<String>) {
    let compose = yaml_docs("docker-compose.yml").remove(0);
    let bridge = &compose["services"]["bridge"];
    assert_eq!(bridge["env_file"][0]["path"].as_str(), Some(".env"));
    assert!(bridge["command"].is_badvalue(), "the image's CMD runs");
    let mut env = image_env();
    let mut dot_env = env_file(&read(".env.example"));
    // The README's Run step: "set WEBHOOK_BASIC_AUTH=thryve:<a long random password>".
    let password = uuid::Uuid::new_v4().simple().to_string();
    dot_env.insert("WEBHOOK_BASIC_AUTH".into(), format!("thryve:{password}"));
    env.extend(dot_env);
    for (k, v) in bridge["environment"].as_hash().expect("an environment map") {
        env.insert(scalar(k), scalar(v));
    }
    (env, vec!["serve".to_owned()])
}

/// The Kubernetes workload in `path`: the image's environment, then its ConfigMap
/// (`envFrom`), then its `env`, secrets read from the example Secret; and its args.
fn kubernetes(path: &str) -> (Env, Vec<String>) {
    let workload = yaml_docs(path)
        .into_iter()
        .find(|d| matches!(d["kind"].as_str(), Some("Deployment" | "Job")))
        .unwrap_or_else(|| panic!("{path}: no Deployment or Job"));
    let container = &workload["spec"]["template"]["spec"]["containers"][0];
    let config_map = yaml_docs("deploy/kubernetes/configmap.yaml").remove(0);
    let secret = yaml_docs("deploy/kubernetes/secret.example.yaml").remove(0);
    let mut env = image_env();
    for source in container["envFrom"].as_vec().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("a ConfigMap");
        assert_eq!(config_map["metadata"]["name"].as_str(), Some(name));
        for (k, v) in config_map["data"].as_hash().unwrap() {
            env.insert(scalar(k), scalar(v));
        }
    }
    for var in container["env"].as_vec().into_iter().flatten() {
        let name = scalar(&var["name"]);
        let value = match &var["valueFrom"]["secretKeyRef"] {
            Yaml::BadValue => scalar(&var["value"]),
            key => {
                assert_eq!(secret["metadata"]["name"], key["name"]);
                scalar(&secret["stringData"][key["key"].as_str().unwrap()])
            }
        };
        env.insert(name, value);
    }
    let args = container["args"]
        .as_vec()
        .expect("args")
        .iter()
        .map(scalar)
        .collect();
    (env, args)
}

/// The separate fetcher of docs/fetcher.md: the variables and arguments of its command line.
fn docs_fetcher() -> (Env, Vec<String>) {
    let doc = read(FETCHER_DOC);
    let block = doc
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("FETCHER_ENABLED=true") && b.contains("thryve-bridge serve"))
        .expect("the separate fetcher's command");
    let words: Vec<&str> = block.split_whitespace().filter(|w| *w != "\\").collect();
    let binary = words.iter().position(|w| *w == "thryve-bridge").unwrap();
    let env = words[..binary]
        .iter()
        .map(|w| {
            let (k, v) = w.split_once('=').expect("NAME=value before the command");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let args = words[binary + 1..]
        .iter()
        .map(|w| (*w).to_owned())
        .collect();
    (env, args)
}

/// The binary with exactly `env`, from a directory without a `.env`; its log (stderr) goes
/// to a file, so that a full pipe can never stall it.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(name: &str, env: &Env, args: &[String]) -> Self {
        let log = std::env::temp_dir().join(format!("deployment-{}.log", uuid::Uuid::new_v4()));
        let child = Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Waits for `/readyz` on the address the deployment binds to answer 200, then stops the
/// process with SIGTERM, as Kubernetes and compose do, and expects a clean exit.
async fn ready_then_stopped(name: &str, env: &Env, args: &[String]) {
    // Where the binary will listen, read from `env` as the binary reads it.
    let port = ServeConfig::from_env(env.clone())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .listener
        .bind_addr
        .port();
    let url = format!("http://127.0.0.1:{port}/readyz");
    let mut process = Process::start(name, env, args);
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!("{name} exited ({status}) before ready: {}", process.log());
        }
        let answer = client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 200) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: {url} not 200 within 30 s: {}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: kill(2) on the child's own pid, which it still is (not yet waited for).
    unsafe { libc::kill(process.child.id() as i32, libc::SIGTERM) };
    let (status, process) = tokio::task::spawn_blocking(move || (process.child.wait(), process))
        .await
        .unwrap();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{name} did not stop cleanly: {status:?}: {}",
        process.log()
    );
}

/// `DATABASE_URL` substituted, and nothing else.
fn on_database(mut env: Env, db: &TestDb) -> Env {
    assert!(env.contains_key("DATABASE_URL"), "the deployment sets one");
    env.insert("DATABASE_URL".to_owned(), db.url());
    env
}

#[tokio::test]
async fn every_shipped_deployment_starts_as_shipped() {
    // Kubernetes: the Job migrates the database, then receivers and pollers serve it.
    let cluster_db = TestDb::unmigrated().await;
    let (env, args) = kubernetes("deploy/kubernetes/migrate-job.yaml");
    let mut migrate = Process::start("migrate Job", &on_database(env, &cluster_db), &args);
    let status = migrate.child.wait().unwrap();
    assert!(status.success(), "migrate Job: {}", migrate.log());
    for path in [
        "deploy/kubernetes/receiver.yaml",
        "deploy/kubernetes/poller.yaml",
    ] {
        let (env, args) = kubernetes(path);
        ready_then_stopped(path, &on_database(env, &cluster_db), &args).await;
    }

    // Compose: the bridge migrates its own database at start (MIGRATE_ON_START).
    let compose_db = TestDb::unmigrated().await;
    let (env, args) = compose_bridge();
    ready_then_stopped("compose bridge", &on_database(env, &compose_db), &args).await;

    // The docs' fetcher, on a migrated database, calling the test's fake Thryve.
    let fake = FakeThryve::start(|_, _| Reply::status(200, "[]")).await;
    let fetcher_db = TestDb::new().await;
    let (env, args) = docs_fetcher();
    let mut env = on_database(env, &fetcher_db);
    env.insert("THRYVE_API_URL".to_owned(), fake.url());
    ready_then_stopped("docs fetcher", &env, &args).await;
}

/// The container's `resources.limits.memory` in `path`, in bytes (`Mi` or `Gi`).
fn memory_limit(path: &str) -> u64 {
    let workload = yaml_docs(path)
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let limit = scalar(
        &workload["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
    );
    let (number, unit) = limit.split_at(limit.len() - 2);
    let number: u64 = number.parse().unwrap_or_else(|e| panic!("{limit}: {e}"));
    match unit {
        "Mi" => number << 20,
        "Gi" => number << 30,
        other => panic!("{path}: memory limit in {other}"),
    }
}

/// A memory cgroup of the test's own under this process's, limited to `bytes` as the
/// container runtime limits a pod (no swap beyond it): a process moved into it is killed by
/// the kernel when it needs more. `None` where this process may not make one (not root, no
/// memory controller mounted); the caller then checks the peak RSS instead.
struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    fn new(bytes: u64) -> Option<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        // cgroup v1 ("N:memory:/path") or v2 ("0::/path").
        let (root, path, limit_file) = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            if controllers.split(',').any(|c| c == "memory") {
                Some(("/sys/fs/cgroup/memory", path, "memory.limit_in_bytes"))
            } else if controllers.is_empty()
                && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
            {
                Some(("/sys/fs/cgroup", path, "memory.max"))
            } else {
                None
            }
        })?;
        let dir = PathBuf::from(format!("{root}{path}/thryve-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).ok()?;
        let group = Self { dir };
        std::fs::write(group.dir.join(limit_file), bytes.to_string()).ok()?;
        // v1 counts swap apart: hold memory and swap together to the same limit.
        let _ = std::fs::write(
            group.dir.join("memory.memsw.limit_in_bytes"),
            bytes.to_string(),
        );
        Some(group)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .expect("move into the cgroup");
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`); `None` once the process has
/// ended (a zombie has none).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 15,000 epoch values of one user in one push, in Thryve's wire form: just under the
/// default 1 MiB decoded, about 29 KB on the wire.
fn huge_push(user: &str) -> Vec<u8> {
    let points = (0..15_000_i64)
        .map(|i| {
            serde_json::json!({"startTimestamp": 1_764_547_200_000 + i * 60_000,
                               "dataTypeId": 3000, "value": (60 + i % 40).to_string()})
        })
        .collect();
    thryve_wire(
        epoch_push(user, "create", Some("Withings"), points)
            .to_string()
            .as_bytes(),
    )
}

#[tokio::test]
async fn the_shipped_poller_works_through_huge_pushes_within_its_memory_limit() {
    // 25 pushes of 15,000 values each, stored by a receiver, then the Kubernetes poller as
    // shipped, held to the memory its manifest allows. Before a batch was bounded in values it
    // was killed within a second and restarted into the same rows for good.
    let path = "deploy/kubernetes/poller.yaml";
    let limit = memory_limit(path);
    let app = spawn_app_with(receiver_only()).await;
    for i in 0..25 {
        let wire = huge_push(&format!("huge-{i}"));
        let size = wire.len();
        let (status, answer) = answer(app.post_encoded("zstd", wire).await).await;
        assert_eq!(status, 200, "push {i} ({size} bytes): {answer}");
    }
    let (env, args) = kubernetes(path);
    let mut env = on_database(env, &app.db);
    // Beside the other tests, not on the shipped port.
    env.insert("BIND_ADDR".to_owned(), "127.0.0.1:0".to_owned());
    let cgroup = MemoryCgroup::new(limit);
    let mut process = Process::start(path, &env, &args);
    let pid = process.child.id();
    if let Some(cgroup) = &cgroup {
        cgroup.add(pid);
    }
    let started = Instant::now();
    let mut peak = 0;
    loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            panic!(
                "{path} exited ({status}) within its {} MiB: {}",
                limit >> 20,
                process.log()
            );
        }
        peak = peak.max(proc_kib(pid, "VmHWM").unwrap_or(0));
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM thryve.inbox WHERE status = 'pending'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        if pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{pending} pushes still pending after 300 s: {}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM thryve.inbox GROUP BY status ORDER BY 1")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let values: i64 = sqlx::query_scalar("SELECT count(*) FROM thryve.epoch_values")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    eprintln!(
        "poller: {} MiB limit ({}), peak RSS {} MiB, RSS when done {} MiB, {:?}, {values} values, {:.1} s",
        limit >> 20,
        if cgroup.is_some() { "cgroup" } else { "no cgroup here: peak RSS checked" },
        peak >> 10,
        proc_kib(pid, "VmRSS").unwrap_or(0) >> 10,
        statuses,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        statuses,
        vec![("processed".to_owned(), 25)],
        "{}",
        process.log()
    );
    assert_eq!(values, 25 * 15_000);
    assert!(
        peak << 10 < limit,
        "peak RSS {peak} KiB over the {limit} byte limit"
    );
}
