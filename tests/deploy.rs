//! Static checks of what cannot run here (no Docker engine): docker-compose.yml, Dockerfile
//! and .env.example agree with each other and with the settings the binary reads, and every
//! default is written down as the binary has it. (Starting the shipped deployments is
//! `tests/api/deployments.rs`.)

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
};

use clap::CommandFactory;
use thryve_bridge::cli::Cli;
use yaml_rust2::{Yaml, YamlLoader};

/// The document whose tables (one per component, headed `| variable | default | meaning |`)
/// list every variable with its default.
const CONFIGURATION_TABLE: &str = "docs/configuration.md";

fn read(path: &str) -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every environment variable any subcommand of the binary reads.
fn variables_read() -> BTreeSet<String> {
    fn walk(command: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&Cli::command(), &mut out);
    out
}

/// Every variable `serve` and the global settings read (the health check's too), with the
/// default the binary declares: `None` when it has none (`DATABASE_URL`), `""` for "unset".
/// The one place each default is defined is its `#[arg]`; everything else is checked
/// against this.
fn declared_defaults() -> BTreeMap<String, Option<String>> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve");
    let healthcheck = cli.find_subcommand("healthcheck").expect("healthcheck");
    cli.get_arguments()
        .chain(serve.get_arguments())
        .chain(healthcheck.get_arguments())
        .filter_map(|arg| {
            let env = arg.get_env()?.to_string_lossy().into_owned();
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            Some((env, (!defaults.is_empty()).then(|| defaults.join(","))))
        })
        .collect()
}

/// `NAME=value` of every setting line of `.env.example`.
fn env_example_values() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect()
}

/// The configuration table's rows: each variable with the default the table gives it (a
/// row may name several, `A` / `B`, with as many defaults or none); `None` for
/// "(required)", `""` for an empty cell or "(empty...)".
fn documented_defaults() -> BTreeMap<String, Option<String>> {
    let doc = read(CONFIGURATION_TABLE);
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    for line in doc.lines() {
        if line == "| variable | default | meaning |" {
            in_table = true;
            continue;
        }
        in_table &= line.starts_with('|');
        if !in_table || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, default) = (cells[1], cells[2]);
        let names: Vec<&str> = names.split(" / ").map(|n| n.trim_matches('`')).collect();
        let defaults: Vec<Option<String>> = if default == "(required)" {
            vec![None; names.len()]
        } else if default.is_empty() || default.starts_with("(empty") {
            vec![Some(String::new()); names.len()]
        } else {
            default
                .split(" / ")
                .map(|d| Some(d.trim_matches('`').to_owned()))
                .collect()
        };
        assert_eq!(names.len(), defaults.len(), "{line}");
        rows.extend(names.into_iter().map(str::to_owned).zip(defaults));
    }
    rows
}

#[test]
fn every_default_in_env_example_and_the_configuration_table_is_the_binarys() {
    let declared = declared_defaults();
    let example = env_example_values();
    let documented = documented_defaults();
    for (variable, default) in &declared {
        let documented = documented
            .get(variable)
            .unwrap_or_else(|| panic!("{CONFIGURATION_TABLE}'s table lacks {variable}"));
        assert_eq!(documented, default, "{CONFIGURATION_TABLE}: {variable}");
        let example = example
            .get(variable)
            .unwrap_or_else(|| panic!(".env.example lacks {variable}"));
        // Without a default (DATABASE_URL) the example's value is an example.
        if let Some(default) = default {
            assert_eq!(example, default, ".env.example: {variable}");
        }
    }
    for variable in documented.keys() {
        assert!(
            declared.contains_key(variable),
            "{CONFIGURATION_TABLE}'s table lists {variable}, which nothing reads"
        );
    }
}

#[test]
fn every_flag_of_serve_is_its_variable_in_kebab_case() {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve");
    for arg in cli.get_arguments().chain(serve.get_arguments()) {
        let Some(env) = arg.get_env() else { continue };
        let env = env.to_string_lossy();
        assert_eq!(
            arg.get_long(),
            Some(env.to_lowercase().replace('_', "-").as_str()),
            "{env}"
        );
    }
}

fn env_example() -> BTreeSet<String> {
    read(".env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().trim().to_owned())
        .collect()
}

fn compose() -> Yaml {
    YamlLoader::load_from_str(&read("docker-compose.yml"))
        .expect("docker-compose.yml is YAML")
        .remove(0)
}

#[test]
fn every_variable_the_binary_reads_is_in_env_example_and_the_configuration_reference() {
    let example = env_example();
    let reference = read(CONFIGURATION_TABLE);
    for variable in variables_read() {
        assert!(example.contains(&variable), ".env.example lacks {variable}");
        assert!(
            reference.contains(&format!("`{variable}`")),
            "{CONFIGURATION_TABLE} lacks {variable}"
        );
    }
    let read_by_binary = variables_read();
    for variable in &example {
        assert!(
            read_by_binary.contains(variable) || variable == "RUST_LOG",
            ".env.example lists {variable}, which nothing reads"
        );
    }
}

#[test]
fn compose_runs_postgres_and_the_bridge_the_way_the_binary_expects() {
    let compose = compose();
    let services = &compose["services"];
    let db = &services["db"];
    // Fully qualified, so podman needs no short-name configuration to pull it.
    let image = db["image"]
        .as_str()
        .unwrap()
        .strip_prefix("docker.io/library/")
        .expect("a fully qualified image");
    assert!(
        image.starts_with("postgres:")
            && image["postgres:".len()..]
                .chars()
                .all(|c| c.is_ascii_digit()),
        "pinned major: {image}"
    );
    assert!(db["healthcheck"]["test"].as_vec().is_some());
    let volume = db["volumes"][0].as_str().unwrap();
    let named = volume.split(':').next().unwrap();
    assert!(
        !compose["volumes"][named].is_badvalue(),
        "named volume {named} is declared"
    );

    let bridge = &services["bridge"];
    assert_eq!(bridge["build"]["target"].as_str(), Some("runtime"));
    assert_eq!(
        bridge["depends_on"]["db"]["condition"].as_str(),
        Some("service_healthy")
    );
    assert_eq!(
        bridge["environment"]["MIGRATE_ON_START"].as_str(),
        Some("true")
    );
    assert_eq!(bridge["env_file"][0]["path"].as_str(), Some(".env"));
    let url = bridge["environment"]["DATABASE_URL"].as_str().unwrap();
    assert!(
        url.contains("@db:5432/"),
        "the bridge reaches the db service: {url}"
    );
    let bind = bridge["environment"]["BIND_ADDR"].as_str().unwrap();
    let port = bind.rsplit(':').next().unwrap();
    // Plain HTTP with /metrics: loopback only. Thryve comes in through the `tls` profile.
    assert_eq!(
        bridge["ports"].as_vec().map(Vec::len),
        Some(1),
        "one published port"
    );
    assert_eq!(
        bridge["ports"][0].as_str(),
        Some(format!("127.0.0.1:{port}:{port}").as_str())
    );
    assert!(
        db["ports"].is_badvalue(),
        "Postgres is not published (a local one may hold 5432)"
    );
    let health: Vec<&str> = bridge["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(&health[..3], ["CMD", "thryve-bridge", "healthcheck"]);
    assert!(
        health
            .iter()
            .any(|a| a.ends_with(&format!(":{port}/readyz"))),
        "{health:?}"
    );
    for variable in bridge["environment"]
        .as_hash()
        .unwrap()
        .keys()
        .filter_map(Yaml::as_str)
    {
        assert!(
            variables_read().contains(variable),
            "compose sets {variable}, which nothing reads"
        );
    }

    let proxy = &services["proxy"];
    assert_eq!(proxy["profiles"][0].as_str(), Some("tls"));
    assert!(proxy["image"].as_str().unwrap().contains("caddy:"));
    assert_eq!(
        proxy["depends_on"]["bridge"]["condition"].as_str(),
        Some("service_healthy")
    );
    let caddyfile_mount = proxy["volumes"][0].as_str().unwrap();
    let caddyfile = read(
        caddyfile_mount
            .split(':')
            .next()
            .unwrap()
            .trim_start_matches("./"),
    );
    assert!(
        caddyfile.contains("method POST")
            && caddyfile.contains("path /webhooks/thryve")
            && caddyfile.contains(&format!("reverse_proxy bridge:{port}")),
        "the proxy passes on POST /webhooks/thryve alone: {caddyfile}"
    );
    assert_eq!(
        caddyfile.matches("reverse_proxy").count(),
        1,
        "one route reaches the bridge"
    );

    let tests = &services["tests"];
    assert_eq!(tests["profiles"][0].as_str(), Some("test"));
    assert_eq!(tests["build"]["target"].as_str(), Some("tests"));
    assert_eq!(
        tests["depends_on"]["db"]["condition"].as_str(),
        Some("service_healthy")
    );
}

#[test]
fn dockerfile_builds_the_binary_in_stages_and_runs_it_unprivileged() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .map(str::trim)
        .collect();
    let compose = compose();
    for target in ["runtime", "tests"] {
        assert!(
            stages.contains(&target),
            "compose builds target {target}; stages: {stages:?}"
        );
    }
    assert_eq!(
        compose["services"]["bridge"]["build"]["target"].as_str(),
        Some("runtime")
    );
    assert!(
        dockerfile.contains("cargo chef cook"),
        "dependencies are built in their own layer"
    );
    assert!(dockerfile.contains(&format!("--bin {}", env!("CARGO_PKG_NAME"))));
    assert!(dockerfile.contains(&format!("/target/release/{}", env!("CARGO_PKG_NAME"))));
    assert!(dockerfile.matches("--locked").count() >= 2);
    let runtime = &dockerfile[dockerfile.find("AS runtime").unwrap()..];
    assert!(
        runtime
            .lines()
            .any(|l| l.starts_with("USER ") && !l.contains("root")),
        "non-root runtime"
    );
    assert!(runtime.contains("EXPOSE 8080") && runtime.contains("BIND_ADDR=0.0.0.0:8080"));
    assert!(runtime.contains(r#"CMD ["thryve-bridge", "healthcheck"]"#));
    let rust_version = dockerfile
        .lines()
        .find(|l| l.starts_with("FROM rust:"))
        .unwrap();
    assert!(rust_version.contains("slim"), "{rust_version}");
}

#[test]
fn the_binary_starts_from_env_example_as_it_is_and_asks_for_a_credential() {
    // `cp .env.example .env` is the README's first step: every line must parse as it stands,
    // so the first error a newcomer sees is the one the README tells them to fix.
    let pairs: Vec<(String, String)> = read(".env.example")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains('='))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
        .arg("serve")
        .env_clear()
        .envs(pairs)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("WEBHOOK_BASIC_AUTH")
            && stderr.contains("no webhook credential configured"),
        "{stderr}"
    );
}

/// Answers one request with `response`, on a port of its own; returns the URL to probe.
fn one_shot_server(response: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        stream.write_all(response.as_bytes()).unwrap();
    });
    url
}

#[test]
fn healthcheck_prints_the_reason_readyz_gave_and_no_colour() {
    let url = one_shot_server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n\
         {\"error\":\"migrations not applied: 20261201000030 missing\"}",
    );
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
        .args(["healthcheck", "--url", &url])
        .env_clear()
        .current_dir(std::env::temp_dir())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("503") && stderr.contains("migrations not applied: 20261201000030 missing"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
}

#[test]
fn help_says_where_every_setting_is_listed() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
        .arg("--help")
        .env_clear()
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for pointer in ["serve --help", ".env.example", "docs/configuration.md"] {
        assert!(help.contains(pointer), "--help lacks {pointer}: {help}");
    }
    // And what it points to holds every setting: the server's, plus the health check's URL.
    let mut listed = String::new();
    for command in ["serve", "healthcheck"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_thryve-bridge"))
            .args([command, "--help"])
            .env_clear()
            .output()
            .expect("the binary runs");
        listed.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    for variable in variables_read() {
        assert!(
            listed.contains(&format!("env: {variable}")),
            "serve --help and healthcheck --help lack {variable}"
        );
    }
}
