//! What an operator deploys besides the binary. The Kubernetes manifests in
//! `config/k8s/`: YAML that parses, a kustomization that lists every file,
//! the switchyard configs they carry valid fleet configs, and ports,
//! probes, labels and mounts that agree with each other and with those
//! configs. The Grafana dashboard: every panel sums over replicas, and every
//! query is PromQL that promtool parses (that its metrics are exported is
//! checked against a live scrape in `metrics.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::{json, Value};
use switchyard_control::{gateway_api, Config};
use switchyard_tests::*;

fn k8s_dir() -> PathBuf {
    workspace_root().join("config/k8s")
}

/// Every YAML document of `path`.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| {
            Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
        })
        .filter(|document| !document.is_null())
        .collect()
}

fn kustomization() -> Value {
    let mut documents = documents(&k8s_dir().join("kustomization.yaml"));
    assert_eq!(documents.len(), 1, "kustomization.yaml is one document");
    documents.remove(0)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The kustomization's resources, every document of each.
fn resources() -> Vec<Value> {
    strings(&kustomization()["resources"])
        .iter()
        .flat_map(|file| documents(&k8s_dir().join(file)))
        .collect()
}

/// The generated ConfigMaps: name → (key → file name in config/k8s).
fn generated_config_maps() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut maps = BTreeMap::new();
    for generator in kustomization()["configMapGenerator"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = generator["name"].as_str().expect("a generator's name");
        let files = strings(&generator["files"])
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                Some((key, file)) => (key.to_owned(), file.to_owned()),
                None => (entry.clone(), entry),
            })
            .collect();
        maps.insert(name.to_owned(), files);
    }
    maps
}

fn of_kind<'a>(resources: &'a [Value], kind: &str) -> Vec<&'a Value> {
    resources.iter().filter(|r| r["kind"] == kind).collect()
}

fn name(resource: &Value) -> &str {
    resource["metadata"]["name"].as_str().unwrap_or("unnamed")
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels[k] == *v))
}

fn named_ports(container: &Value) -> BTreeMap<String, u64> {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["containerPort"].as_u64()?)))
        .collect()
}

/// A Deployment's switchyard container, its config (parsed) and the
/// directory its admin token is mounted in.
struct Switchyard<'a> {
    deployment: &'a Value,
    container: &'a Value,
    config: Config,
    token_dir: String,
}

fn switchyards(resources: &[Value]) -> Vec<Switchyard<'_>> {
    let generated = generated_config_maps();
    let mut found = Vec::new();
    for deployment in of_kind(resources, "Deployment") {
        let spec = &deployment["spec"]["template"]["spec"];
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        let volume = |name: &str| volumes.iter().find(|v| v["name"] == name).cloned();
        for container in spec["containers"].as_array().into_iter().flatten() {
            if container["image"] != "switchyard" {
                continue;
            }
            let what = format!("{}'s switchyard container", name(deployment));
            let args = strings(&container["args"]);
            let config_path = args
                .iter()
                .position(|a| a == "--config")
                .and_then(|i| args.get(i + 1))
                .unwrap_or_else(|| panic!("{what} runs without --config: {args:?}"));
            let (dir, key) = config_path
                .rsplit_once('/')
                .unwrap_or_else(|| panic!("{what}: --config {config_path} is not a path"));
            let mut config = None;
            let mut token_dir = None;
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let mount_path = mount["mountPath"].as_str().unwrap_or_default().to_owned();
                let volume = volume(mount["name"].as_str().unwrap_or_default())
                    .unwrap_or_else(|| panic!("{what} mounts an undeclared volume: {mount}"));
                if let Some(map) = volume["configMap"]["name"].as_str() {
                    if mount_path == dir {
                        let file = generated
                            .get(map)
                            .and_then(|files| files.get(key))
                            .unwrap_or_else(|| {
                                panic!("{what} reads {config_path}: ConfigMap {map} has no generated key {key}")
                            });
                        // With the HTTPRoute files it names, which must sit
                        // beside it in the same ConfigMap.
                        let parsed = gateway_api::load(&k8s_dir().join(file)).unwrap_or_else(|e| {
                            panic!("config/k8s/{file} is not a valid config: {e}")
                        });
                        for named in parsed.gateway_api.iter().flat_map(|g| &g.files) {
                            assert!(
                                generated
                                    .get(map)
                                    .is_some_and(|files| files.contains_key(named)),
                                "{what}: {file} names {named}, absent from ConfigMap {map}"
                            );
                        }
                        config = Some(parsed);
                    }
                }
                if volume["secret"]["secretName"].is_string() {
                    token_dir = Some(mount_path);
                }
            }
            found.push(Switchyard {
                deployment,
                container,
                config: config
                    .unwrap_or_else(|| panic!("{what}: no ConfigMap volume mounted at {dir}")),
                token_dir: token_dir.unwrap_or_else(|| panic!("{what} mounts no Secret")),
            });
        }
    }
    found
}

#[test]
fn every_manifest_parses_and_the_kustomization_lists_them_all() {
    let kustomization = kustomization();
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let generated: BTreeSet<String> = generated_config_maps()
        .into_values()
        .flat_map(BTreeMap::into_values)
        .collect();
    let mut yaml = BTreeSet::new();
    let mut toml = BTreeSet::new();
    for entry in std::fs::read_dir(k8s_dir()).expect("config/k8s") {
        let file = entry
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        // Generated files (configs and the HTTPRoutes they name) are not
        // resources.
        if generated.contains(&file) || file.ends_with(".toml") {
            toml.insert(file);
        } else if file.ends_with(".yaml") && file != "kustomization.yaml" {
            yaml.insert(file);
        }
    }
    assert_eq!(
        listed, yaml,
        "kustomization.yaml resources vs the YAML files"
    );
    assert_eq!(
        generated, toml,
        "configMapGenerator files vs the config files"
    );

    let resources = resources();
    for resource in &resources {
        for field in ["apiVersion", "kind"] {
            assert!(resource[field].is_string(), "no {field}: {resource}");
        }
        assert!(name(resource) != "unnamed", "no metadata.name: {resource}");
    }
    let kinds: BTreeSet<&str> = resources
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    for kind in ["Namespace", "Deployment", "Service", "PodMonitor"] {
        assert!(kinds.contains(kind), "no {kind} among {kinds:?}");
    }
}

#[test]
fn the_configs_are_fleet_configs_whose_ports_and_files_the_pods_provide() {
    let resources = resources();
    let switchyards = switchyards(&resources);
    assert!(
        switchyards.len() >= 2,
        "the ingress and the sidecar example"
    );
    for s in &switchyards {
        let what = format!("{}'s switchyard", name(s.deployment));
        let cluster = s
            .config
            .cluster
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: its config has no [cluster]"));
        // The default name is the hostname, which is the pod's name: unique
        // per replica. One fixed name would make every replica the same
        // member.
        assert!(cluster.name.is_none(), "{what}: [cluster] name is fixed");
        let ports = named_ports(s.container);
        let admin = s.config.listen.admin_addr();
        assert_eq!(
            ports.get("admin"),
            Some(&u64::from(admin.port())),
            "{what}: container port 'admin' vs [listen] admin"
        );
        // Off loopback the admin API refuses to start without a token.
        assert!(
            !admin.ip().is_loopback(),
            "{what}: Prometheus cannot reach {admin}"
        );
        let token = s
            .config
            .admin
            .token_file
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: admin off loopback needs [admin] token_file"));
        assert_eq!(
            token.parent().map(|p| p.display().to_string()),
            Some(s.token_dir.clone()),
            "{what}: token_file is not in the mounted Secret"
        );
        if let Some(http) = ports.get("http") {
            assert_eq!(
                *http,
                u64::from(s.config.listen.data_addr().port()),
                "{what}: container port 'http' vs [listen] data"
            );
        }
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &s.container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{what}: {probe}");
            assert_eq!(get["port"], "admin", "{what}: {probe}");
        }
    }
}

#[test]
fn services_and_the_pod_monitor_select_pods_and_ports_that_exist() {
    let resources = resources();
    let switchyards = switchyards(&resources);
    let pods: Vec<(&Value, BTreeMap<String, u64>)> = of_kind(&resources, "Deployment")
        .into_iter()
        .map(|d| {
            let spec = &d["spec"];
            assert!(
                selects(
                    &spec["selector"]["matchLabels"],
                    &spec["template"]["metadata"]["labels"]
                ),
                "{}: its selector does not match its pods",
                name(d)
            );
            let ports = spec["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(named_ports)
                .collect();
            (&spec["template"]["metadata"]["labels"], ports)
        })
        .collect();
    for service in of_kind(&resources, "Service") {
        let selector = &service["spec"]["selector"];
        let selected: Vec<_> = pods.iter().filter(|(l, _)| selects(selector, l)).collect();
        assert!(
            !selected.is_empty(),
            "Service {} selects no pods",
            name(service)
        );
        for port in service["spec"]["ports"].as_array().into_iter().flatten() {
            let target = port["targetPort"].as_str().expect("a named targetPort");
            for (_, ports) in &selected {
                assert!(
                    ports.contains_key(target),
                    "Service {} targets port {target}, absent from its pods",
                    name(service)
                );
            }
        }
    }
    for monitor in of_kind(&resources, "PodMonitor") {
        let selector = &monitor["spec"]["selector"]["matchLabels"];
        // Every pod with a switchyard in it is scraped.
        for s in &switchyards {
            assert!(
                selects(
                    selector,
                    &s.deployment["spec"]["template"]["metadata"]["labels"]
                ),
                "PodMonitor {} misses {}'s pods",
                name(monitor),
                name(s.deployment)
            );
        }
        for endpoint in monitor["spec"]["podMetricsEndpoints"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(endpoint["path"], "/metrics");
            let port = endpoint["port"].as_str().expect("a named port");
            for s in &switchyards {
                assert!(
                    named_ports(s.container).contains_key(port),
                    "PodMonitor scrapes port {port}, absent from {}'s switchyard",
                    name(s.deployment)
                );
            }
        }
    }
}

#[test]
fn every_dashboard_panel_sums_over_replicas() {
    let queries = grafana::queries(&grafana::dashboard());
    let panels: Vec<_> = queries
        .iter()
        .filter(|q| !q.place.starts_with("variable "))
        .collect();
    assert!(panels.len() >= 10, "{panels:?}");
    for query in panels {
        let expr = query.expr.as_str();
        // One line per replica only where a panel is about replicas.
        assert!(
            ["sum", "max", "min", "count", "histogram_quantile("]
                .iter()
                .any(|start| expr.starts_with(start)),
            "{}: {expr} does not aggregate over replicas",
            query.place
        );
        // Quantiles from buckets summed over replicas, never per replica
        // (unless by instance) nor averaged.
        if expr.contains("_bucket") {
            assert!(
                expr.starts_with("histogram_quantile(")
                    && expr.contains("sum by (")
                    && expr.contains(" le)"),
                "{}: {expr} is not a quantile of buckets summed by le",
                query.place
            );
        }
    }
}

#[test]
#[cfg_attr(
    missing_promtool,
    ignore = "promtool is not installed (scripts/test.sh installs it)"
)]
fn every_dashboard_query_is_promql_that_promtool_parses() {
    let queries = grafana::queries(&grafana::dashboard());
    // Template variables use Grafana's label_values(), not PromQL.
    let rules: Vec<Value> = queries
        .iter()
        .filter(|q| !q.place.starts_with("variable "))
        .enumerate()
        .map(|(n, q)| json!({"record": format!("dashboard:query_{n}"), "expr": grafana::as_promql(&q.expr)}))
        .collect();
    let count = rules.len();
    assert!(count > 0);
    // A rules file: JSON is YAML.
    let dir = temp_dir("dashboard-promql");
    let file = dir.join("rules.json");
    let groups = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).expect("write the rules file");
    let output = Command::new(require_tool("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool check rules:\n{said}");
    assert!(said.contains(&format!("{count} rules found")), "{said}");
}
