//! The real `switchyard` binary with Gateway API HTTPRoutes: `check` takes
//! a YAML file and reports an unsupported field with its path, line and
//! column; `run` serves from a TOML config naming a YAML file; and
//! `switchyard export --gateway-api` prints the live weights as HTTPRoute
//! YAML that `check` accepts again.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use switchyard_tests::admin::AdminClient;
use switchyard_tests::child::KillOnDrop;
use switchyard_tests::*;

const SWITCHYARD: &str = env!("CARGO_BIN_EXE_switchyard");

fn switchyard(args: &[&str], file: Option<&Path>) -> Output {
    let mut command = Command::new(SWITCHYARD);
    command.args(args);
    if let Some(file) = file {
        command.arg(file);
    }
    command
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run switchyard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn split(v1_port: u16, v2_port: u16) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
spec:
  rules:
  - backendRefs:
    - name: foo-v1
      port: {v1_port}
      weight: 90
    - name: foo-v2
      port: {v2_port}
      weight: 10
"
    )
}

#[test]
fn check_reads_yaml_and_names_the_unsupported_field_and_line() {
    let dir = temp_dir("gw-cli-check");
    let path = dir.join("routes.yml");
    std::fs::write(&path, split(8080, 8081)).expect("write");
    let output = switchyard(&["check"], Some(&path));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout), "ok\n");

    let broken = split(8080, 8081).replace(
        "  - backendRefs:\n",
        "  - filters:\n    - type: URLRewrite\n    backendRefs:\n",
    );
    std::fs::write(&path, broken).expect("write");
    let output = switchyard(&["check"], Some(&path));
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "routes.yml: line 8, column 13: document 1, HTTPRoute foo-route: \
             spec.rules[0].filters[0].type: filter type URLRewrite is not supported"
        ),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_named_yaml_and_export_prints_it_back() {
    let v1 = backend("foo-v1").start().await;
    let v2 = backend("foo-v2").start().await;
    let port = |b: &Backend| {
        b.endpoint()
            .rsplit(':')
            .next()
            .expect("port")
            .parse()
            .expect("port")
    };
    let dir = temp_dir("gw-cli-run");
    std::fs::write(dir.join("routes.yaml"), split(port(&v1), port(&v2))).expect("write");
    let data = free_port().await;
    let admin_addr = free_port().await;
    let toml = format!(
        "[listen]\ndata = \"{data}\"\nadmin = \"{admin_addr}\"\n\n\
         [gateway_api]\nfiles = [\"routes.yaml\"]\nservice_address = \"127.0.0.1:{{port}}\"\n"
    );
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, toml).expect("write");
    let child = Command::new(SWITCHYARD)
        .args(["run", "--no-watch", "--workers", "1", "--config"])
        .arg(&path)
        .env("SWITCHYARD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn switchyard run");
    let _process = KillOnDrop(child);
    let admin = AdminClient::new(admin_addr, None);
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let req = http::Request::get(format!("{}/readyz", admin.base))
            .body(empty())
            .expect("request");
        if send(&client, req)
            .await
            .is_ok_and(|reply| reply.status == 200)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "switchyard run never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let routes = admin.routes().await.1.to_string();
    assert!(routes.contains("foo-v2"), "{routes}");
    let reply = get(&client, &format!("http://{data}/")).await;
    assert_eq!(reply.status, 200);

    let admin_arg = admin_addr.to_string();
    let output = switchyard(
        &[
            "export",
            "--gateway-api",
            "--admin",
            &admin_arg,
            "--route",
            "foo-route",
        ],
        None,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let yaml = text(&output.stdout);
    assert!(
        yaml.contains("weight: 90") && yaml.contains("weight: 10"),
        "{yaml}"
    );
    // The export is itself a config `check` accepts.
    let exported = dir.join("exported.yaml");
    std::fs::write(&exported, &yaml).expect("write");
    let output = switchyard(&["check"], Some(&exported));
    assert!(output.status.success(), "{}\n{yaml}", text(&output.stderr));

    let output = switchyard(
        &[
            "export",
            "--gateway-api",
            "--admin",
            &admin_arg,
            "--route",
            "nope",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output.stderr).contains("no route 'nope'"),
        "{}",
        text(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
