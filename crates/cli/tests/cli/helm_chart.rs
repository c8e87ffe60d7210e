//! The Helm chart in `charts/updraft`, checked with the real tools: `helm lint --strict` and
//! `helm template` with Helm 4 and Helm 3, every render validated offline by
//! `kubernetes-validate --strict` against current Kubernetes schemas, bad values refused by
//! `values.schema.json`, the rendered configuration accepted by this very binary, and, against a
//! real kube-apiserver (v1.20, no kubelet), a server-side dry run of every render and an install
//! followed by an upgrade that keeps the generated secrets.
//!
//! The tools come from scripts/helm.sh, scripts/kubernetes-validate.sh and
//! scripts/kube-apiserver.sh, which print `UPDRAFT_TEST_HELM`, `UPDRAFT_TEST_HELM3`,
//! `UPDRAFT_TEST_KUBECTL`, `UPDRAFT_TEST_KUBERNETES_VALIDATE` and `UPDRAFT_TEST_KUBECONFIG`
//! (scripts/test.sh exports them). Without them the tests skip with a notice, except in CI,
//! where they fail.

use super::*;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};

/// Kubernetes versions every render is validated against: the newest the validator knows, and
/// the oldest minor still supported by AKS and EKS standard support at the time of writing.
const KUBE_VERSIONS: &[&str] = &["1.37.0", "1.32.0"];

/// The values files of the chart tests: defaults, an AKS-like and an EKS-like installation.
const VALUES: &[(&str, Option<&str>)] = &[
    ("default", None),
    ("aks", Some("ci/aks-values.yaml")),
    ("eks", Some("ci/eks-values.yaml")),
];

/// Options the chart sets itself from dedicated values (or from Secrets); the schema keeps them
/// out of `config` so they cannot be set twice.
const CHART_MANAGED: &[(&str, &str)] = &[
    ("database", "url"),
    ("core", "fernet_key"),
    ("api", "secret_key"),
    ("core", "executor"),
    ("core", "execution_api_server_url"),
    ("core", "dags_folder"),
    ("core", "load_examples"),
    ("logging", "base_log_folder"),
    ("api", "host"),
    ("api", "port"),
    ("scheduler", "enable_health_check"),
    ("scheduler", "health_check_host"),
    ("scheduler", "health_check_port"),
    ("scheduler", "health_check_threshold"),
    ("kubernetes", "namespace"),
    ("kubernetes", "worker_image"),
    ("kubernetes", "pod_template_file"),
    ("kubernetes", "worker_service_account_name"),
    ("kubernetes", "instance"),
    ("kubernetes", "in_cluster"),
    ("kubernetes", "config_file"),
];

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../charts/updraft")
        .canonicalize()
        .expect("charts/updraft exists")
}

/// A tool named by an environment variable, or `None` (skip) outside CI.
fn tool(var: &str, script: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let msg = format!(
                "{var} is not set: run `eval \"export $({script} | tail -n 1)\"` \
                 (scripts/test.sh does)"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// Helm 4 and Helm 3.
fn helms() -> Option<Vec<(&'static str, String)>> {
    let h4 = tool("UPDRAFT_TEST_HELM", "scripts/helm.sh")?;
    let h3 = tool("UPDRAFT_TEST_HELM3", "scripts/helm.sh")?;
    Some(vec![("helm 4", h4), ("helm 3", h3)])
}

fn validator() -> Option<String> {
    tool(
        "UPDRAFT_TEST_KUBERNETES_VALIDATE",
        "scripts/kubernetes-validate.sh",
    )
}

/// kubectl and the kubeconfig of the test apiserver.
fn cluster() -> Option<(String, String)> {
    let kubectl = tool("UPDRAFT_TEST_KUBECTL", "scripts/helm.sh")?;
    let kubeconfig = tool("UPDRAFT_TEST_KUBECONFIG", "scripts/kube-apiserver.sh start")?;
    Some((kubectl, kubeconfig))
}

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Ran {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(chart_dir())
        // Helm keeps caches and plugins under these; never the developer's own.
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("updraft-test-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("updraft-test-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("updraft-test-helm/data"),
        )
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn must(what: &str, r: Ran) -> String {
    assert!(
        r.ok,
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    r.stdout
}

fn values_args(values: Option<&str>) -> Vec<&str> {
    values.map(|f| vec!["-f", f]).unwrap_or_default()
}

/// `helm template` of release `t` in namespace `ns`.
fn render(helm: &str, values: Option<&str>, extra: &[&str]) -> String {
    let mut args = vec!["template", "t", ".", "--namespace", "ns"];
    args.extend(values_args(values));
    args.extend(extra);
    must(
        &format!("{helm} {}", args.join(" ")),
        run(helm, &args, None),
    )
}

/// The documents of a render (comments and empty documents dropped).
fn docs(text: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Yaml::deserialize(d).expect("the render is YAML"))
        .filter(|d| !d.is_null())
        .collect()
}

use serde::Deserialize as _;

fn kind_name(d: &Yaml) -> (String, String) {
    (
        d["kind"].as_str().unwrap_or("").to_string(),
        d["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

fn get<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| {
            let all: Vec<_> = docs.iter().map(kind_name).collect();
            panic!("no {kind} {name} in the render: {all:?}")
        })
}

fn has(docs: &[Yaml], kind: &str, name: &str) -> bool {
    docs.iter()
        .any(|d| kind_name(d) == (kind.to_string(), name.to_string()))
}

fn s(v: &Yaml) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn seq(v: &Yaml) -> &Vec<Yaml> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a sequence: {v:?}"))
}

/// Every container and init container of a workload.
fn containers(workload: &Yaml) -> Vec<&Yaml> {
    let spec = &workload["spec"]["template"]["spec"];
    let mut all: Vec<&Yaml> = Vec::new();
    for key in ["initContainers", "containers"] {
        if let Some(list) = spec[key].as_sequence() {
            all.extend(list.iter());
        }
    }
    all
}

fn container<'a>(workload: &'a Yaml, name: &str) -> &'a Yaml {
    containers(workload)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_of(c: &Yaml) -> BTreeMap<String, Yaml> {
    seq(&c["env"])
        .iter()
        .map(|e| (s(&e["name"]).to_string(), e.clone()))
        .collect()
}

fn secret_ref(env: &BTreeMap<String, Yaml>, name: &str) -> (String, String) {
    let r =
        &env.get(name).unwrap_or_else(|| panic!("{name} is not set"))["valueFrom"]["secretKeyRef"];
    (s(&r["name"]).to_string(), s(&r["key"]).to_string())
}

/// The decoded value of `key` in a rendered Secret (`data` or `stringData`).
fn secret_value(docs: &[Yaml], name: &str, key: &str) -> String {
    let secret = get(docs, "Secret", name);
    if let Some(v) = secret["stringData"][key].as_str() {
        return v.to_string();
    }
    String::from_utf8(base64_decode(s(&secret["data"][key]), false)).unwrap()
}

/// Standard (or, with `url_safe`, URL-safe) base64 with optional padding.
fn base64_decode(text: &str, url_safe: bool) -> Vec<u8> {
    let alphabet: &[u8] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = alphabet
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("`{text}` is not base64")) as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

fn workloads(docs: &[Yaml]) -> Vec<&Yaml> {
    docs.iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .collect()
}

// ---- lint and render ---------------------------------------------------------------------

#[test]
fn lint_strict_with_helm_4_and_helm_3_and_notes_render() {
    let Some(helms) = helms() else { return };
    for (label, helm) in &helms {
        for (name, values) in VALUES {
            let mut args = vec!["lint", "--strict", "."];
            args.extend(values_args(*values));
            let out = must(&format!("{label} lint {name}"), run(helm, &args, None));
            assert!(out.contains("0 chart(s) failed"), "{label} {name}: {out}");
        }
    }
    // NOTES.txt renders for every values file (Helm 4 renders it without a cluster)
    for (name, values) in VALUES {
        let mut args = vec!["install", "t", ".", "--dry-run=client", "--namespace", "ns"];
        args.extend(values_args(*values));
        let out = must(
            &format!("helm 4 install --dry-run {name}"),
            run(&helms[0].1, &args, None),
        );
        let notes = &out[out.find("NOTES:").expect("NOTES are printed")..];
        assert!(notes.contains("Log in as `admin`"), "{name}: {notes}");
        assert!(notes.contains("/auth/token"), "{name}: {notes}");
    }
}

#[test]
fn every_render_is_valid_for_current_kubernetes_in_strict_mode() {
    let (Some(helms), Some(validate)) = (helms(), validator()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (label, helm) in &helms {
        for (name, values) in VALUES {
            let text = render(helm, *values, &[]);
            let file = dir.path().join(format!("{name}.yaml"));
            std::fs::write(&file, &text).unwrap();
            for version in KUBE_VERSIONS {
                let r = run(
                    &validate,
                    &["--strict", "-k", version, file.to_str().unwrap()],
                    None,
                );
                assert!(
                    r.ok,
                    "{label} render of {name} is not valid for Kubernetes {version}:\n{}{}",
                    r.stdout, r.stderr
                );
                assert!(r.stdout.contains("passed"), "{}", r.stdout);
            }
        }
    }
    // The validator is not vacuous: an unknown field and a wrong type are caught.
    let helm = &helms[0].1;
    let text = render(helm, None, &[]);
    for (bad, what) in [
        ("enableServiceLinks: false", "enableServiceLink: false"),
        ("replicas: 1\n", "replicas: one\n"),
    ] {
        let broken = text.replacen(bad, what, 1);
        assert_ne!(broken, text, "the render has `{bad}`");
        let file = dir.path().join("broken.yaml");
        std::fs::write(&file, broken).unwrap();
        let r = run(
            &validate,
            &["--strict", "-k", KUBE_VERSIONS[0], file.to_str().unwrap()],
            None,
        );
        assert!(!r.ok, "kubernetes-validate accepted `{what}`");
    }
}

#[test]
fn workloads_run_as_non_root_read_only_with_probes_resources_and_no_hooks() {
    let Some(helms) = helms() else { return };
    for (label, helm) in &helms {
        for (name, values) in VALUES {
            let docs = docs(&render(helm, *values, &[]));
            let ctx = format!("{label}, {name} values");
            for d in &docs {
                // Secrets and migrations are plain resources: nothing waits on a hook, so
                // `helm --wait`, Argo CD and Flux all apply the same objects.
                assert!(
                    d["metadata"]["annotations"]["helm.sh/hook"].is_null(),
                    "{ctx}: {:?} is a Helm hook",
                    kind_name(d)
                );
            }
            for w in workloads(&docs) {
                let (_, wname) = kind_name(w);
                let pod = &w["spec"]["template"]["spec"];
                assert_eq!(
                    pod["securityContext"]["runAsNonRoot"], true,
                    "{ctx}: {wname}"
                );
                for c in containers(w) {
                    let cname = s(&c["name"]);
                    let sc = &c["securityContext"];
                    assert_eq!(sc["readOnlyRootFilesystem"], true, "{ctx}: {wname}/{cname}");
                    assert_eq!(
                        sc["allowPrivilegeEscalation"], false,
                        "{ctx}: {wname}/{cname}"
                    );
                    assert_eq!(
                        sc["capabilities"]["drop"],
                        serde_yaml::from_str::<Yaml>("[ALL]").unwrap(),
                        "{ctx}: {wname}/{cname}"
                    );
                }
                let main = &seq(&pod["containers"])[0];
                assert!(
                    main["resources"]["requests"].is_mapping(),
                    "{ctx}: {wname} has no resource requests"
                );
                assert!(
                    main["livenessProbe"].is_mapping() && main["readinessProbe"].is_mapping()
                        || main["livenessProbe"].is_mapping() && wname.ends_with("scheduler"),
                    "{ctx}: {wname} lacks probes"
                );
            }

            let sched = get(&docs, "Deployment", "t-updraft-scheduler");
            let c = container(sched, "scheduler");
            assert_eq!(
                c["args"],
                serde_yaml::from_str::<Yaml>("[scheduler]").unwrap()
            );
            let env = env_of(c);
            assert_eq!(
                env["UPDRAFT__SCHEDULER__ENABLE_HEALTH_CHECK"]["value"],
                "true"
            );
            let port = s(&env["UPDRAFT__SCHEDULER__HEALTH_CHECK_PORT"]["value"]);
            let health_port = seq(&c["ports"])
                .iter()
                .find(|p| p["name"] == "health")
                .expect("a health port");
            assert_eq!(
                health_port["containerPort"].as_u64().unwrap().to_string(),
                port
            );
            for probe in ["livenessProbe", "startupProbe"] {
                assert_eq!(c[probe]["httpGet"]["path"], "/health", "{ctx}: {probe}");
                assert_eq!(c[probe]["httpGet"]["port"], "health", "{ctx}: {probe}");
            }
            assert!(
                (c["terminationGracePeriodSeconds"].is_null())
                    && sched["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                        .as_u64()
                        .unwrap()
                        > 30,
                "{ctx}: the grace period must exceed scheduler.shutdown_grace (30s)"
            );

            let api = get(&docs, "Deployment", "t-updraft-api-server");
            let c = container(api, "api-server");
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                assert_eq!(
                    c[probe]["httpGet"]["path"], "/api/v2/monitor/health",
                    "{ctx}: {probe}"
                );
            }
            for (w, component) in [(sched, "scheduler"), (api, "api-server")] {
                let init = container(w, "migrate-database");
                assert_eq!(
                    init["args"],
                    serde_yaml::from_str::<Yaml>("[db, migrate]").unwrap()
                );
                let pdb = get(
                    &docs,
                    "PodDisruptionBudget",
                    &format!("t-updraft-{component}"),
                );
                assert_eq!(
                    pdb["spec"]["selector"]["matchLabels"], w["spec"]["selector"]["matchLabels"],
                    "{ctx}: the PDB of {component} selects its pods"
                );
            }
        }
    }
}

#[test]
fn pod_launcher_rbac_is_namespaced_or_cluster_wide() {
    let Some(helms) = helms() else { return };
    let helm = &helms[0].1;
    let expected: Yaml = serde_yaml::from_str(
        "- {apiGroups: [''], resources: [pods], verbs: [create, get, list, watch, delete, patch]}\n\
         - {apiGroups: [''], resources: [pods/log], verbs: [get]}\n\
         - {apiGroups: [''], resources: [events], verbs: [list]}\n",
    )
    .unwrap();
    let d = docs(&render(helm, None, &[]));
    let role = get(&d, "Role", "t-updraft-pod-launcher");
    assert_eq!(role["metadata"]["namespace"], "ns");
    assert_eq!(role["rules"], expected);
    let binding = get(&d, "RoleBinding", "t-updraft-pod-launcher");
    assert_eq!(binding["subjects"][0]["name"], "t-updraft-scheduler");
    assert!(!d.iter().any(|x| x["kind"] == "ClusterRole"));

    let d = docs(&render(helm, None, &["--set", "multiNamespaceMode=true"]));
    let role = get(&d, "ClusterRole", "ns-t-updraft-pod-launcher");
    assert_eq!(role["rules"], expected);
    let binding = get(&d, "ClusterRoleBinding", "ns-t-updraft-pod-launcher");
    assert_eq!(binding["subjects"][0]["namespace"], "ns");
    assert!(!d.iter().any(|x| x["kind"] == "Role"));

    // the EKS values name the task namespaces: a Role in each, none cluster-wide
    let d = docs(&render(helm, Some("ci/eks-values.yaml"), &[]));
    let role = get(&d, "Role", "t-updraft-pod-launcher");
    assert_eq!(role["metadata"]["namespace"], "updraft-tasks");
    assert!(!d.iter().any(|x| x["kind"] == "ClusterRole"));

    let d = docs(&render(helm, None, &["--set", "rbac.create=false"]));
    assert!(!d.iter().any(|x| x["kind"] == "Role"));
}

#[test]
fn aks_and_eks_values_use_existing_secrets_workload_identity_pgbouncer_and_ingress() {
    let Some(helms) = helms() else { return };
    for (label, helm) in &helms {
        // AKS
        let d = docs(&render(helm, Some("ci/aks-values.yaml"), &[]));
        let sa = get(&d, "ServiceAccount", "t-updraft-scheduler");
        assert_eq!(
            sa["metadata"]["annotations"]["azure.workload.identity/client-id"],
            "00000000-0000-0000-0000-000000000000",
            "{label}"
        );
        let sched = get(&d, "Deployment", "t-updraft-scheduler");
        assert_eq!(
            sched["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
            "true"
        );
        assert_eq!(
            sched["spec"]["template"]["spec"]["serviceAccountName"],
            "t-updraft-scheduler"
        );
        let worker_sa = get(&d, "ServiceAccount", "t-updraft-worker");
        assert!(
            worker_sa["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string()
        );
        for w in [sched, get(&d, "Deployment", "t-updraft-api-server")] {
            for c in containers(w) {
                let env = env_of(c);
                assert_eq!(
                    secret_ref(&env, "UPDRAFT__DATABASE__URL"),
                    ("updraft-metadata".into(), "connection".into())
                );
                assert_eq!(
                    secret_ref(&env, "UPDRAFT__CORE__FERNET_KEY"),
                    ("updraft-fernet-key".into(), "fernet-key".into())
                );
                assert_eq!(
                    secret_ref(&env, "UPDRAFT__API__SECRET_KEY"),
                    ("updraft-api-secret-key".into(), "api-secret-key".into())
                );
            }
        }
        let init = container(
            get(&d, "Deployment", "t-updraft-api-server"),
            "create-default-user",
        );
        assert_eq!(
            secret_ref(&env_of(init), "UPDRAFT_DEFAULT_PASSWORD"),
            ("updraft-admin-password".into(), "password".into())
        );
        // nothing is generated when every secret exists
        let secrets: Vec<_> = d
            .iter()
            .filter(|x| x["kind"] == "Secret")
            .map(kind_name)
            .collect();
        assert!(secrets.is_empty(), "{label}: {secrets:?}");
        assert!(!has(&d, "StatefulSet", "t-updraft-postgresql"));
        let bouncer = get(&d, "Deployment", "t-updraft-pgbouncer");
        assert_eq!(
            bouncer["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
            "updraft-pgbouncer-config"
        );
        assert_eq!(
            get(&d, "Service", "t-updraft-pgbouncer")["spec"]["ports"][0]["port"],
            6543
        );
        let ing = get(&d, "Ingress", "t-updraft-api-server");
        assert_eq!(ing["spec"]["rules"][0]["host"], "updraft.example.com");
        assert_eq!(ing["spec"]["tls"][0]["secretName"], "updraft-tls");
        assert_eq!(ing["spec"]["ingressClassName"], "nginx");
        assert_eq!(
            ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"],
            "t-updraft-api-server"
        );
        assert_eq!(
            get(&d, "PersistentVolumeClaim", "t-updraft-logs")["spec"]["accessModes"][0],
            "ReadWriteMany"
        );
        for np in ["scheduler", "api-server", "pgbouncer"] {
            get(&d, "NetworkPolicy", &format!("t-updraft-{np}"));
        }

        // EKS
        let d = docs(&render(helm, Some("ci/eks-values.yaml"), &[]));
        for (sa, role) in [
            ("t-updraft-scheduler", "updraft-scheduler"),
            ("t-updraft-api-server", "updraft-api-server"),
            ("t-updraft-worker", "updraft-tasks"),
        ] {
            assert_eq!(
                get(&d, "ServiceAccount", sa)["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
                format!("arn:aws:iam::123456789012:role/{role}").as_str(),
                "{label}"
            );
        }
        let sched = get(&d, "Deployment", "t-updraft-scheduler");
        let c = container(sched, "scheduler");
        assert!(s(&c["image"]).ends_with(
            "/updraft@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        ));
        assert_eq!(
            secret_ref(&env_of(c), "UPDRAFT__DATABASE__URL"),
            ("updraft-db".into(), "connection".into())
        );
        let dags = seq(&sched["spec"]["template"]["spec"]["volumes"])
            .iter()
            .find(|v| v["name"] == "dags")
            .unwrap();
        assert_eq!(
            dags["persistentVolumeClaim"]["claimName"],
            "updraft-dags-efs"
        );
        assert_eq!(
            get(&d, "Ingress", "t-updraft-api-server")["spec"]["ingressClassName"],
            "alb"
        );
        // only the admin password is generated (the EKS values give no Secret for it)
        let secrets: Vec<_> = d
            .iter()
            .filter(|x| x["kind"] == "Secret")
            .map(|x| kind_name(x).1)
            .collect();
        assert_eq!(secrets, ["t-updraft-admin-password"], "{label}");
    }
}

#[test]
fn chart_written_database_url_goes_through_pgbouncer_when_enabled() {
    let Some(helms) = helms() else { return };
    let helm = &helms[0].1;
    let d = docs(&render(
        helm,
        None,
        &[
            "--set",
            "postgresql.enabled=false,pgbouncer.enabled=true,data.metadataConnection.host=db.example.com,data.metadataConnection.pass=p@ss word,pgbouncer.sslmode=require",
        ],
    ));
    let url = secret_value(&d, "t-updraft-metadata", "connection");
    assert_eq!(
        url,
        "postgres://updraft:p%40ss+word@t-updraft-pgbouncer:6543/updraft"
    );
    let ini = secret_value(&d, "t-updraft-pgbouncer-config", "pgbouncer.ini");
    assert!(
        ini.contains("updraft = host=db.example.com port=5432 dbname=updraft"),
        "{ini}"
    );
    assert!(ini.contains("pool_mode = transaction"), "{ini}");
    assert!(ini.contains("server_tls_sslmode = require"), "{ini}");
    assert!(
        ini.contains("ignore_startup_parameters = extra_float_digits,options"),
        "{ini}"
    );
    let users = secret_value(&d, "t-updraft-pgbouncer-config", "users.txt");
    assert_eq!(users.trim(), "\"updraft\" \"p@ss word\"");

    // without PgBouncer the URL names the server
    let d = docs(&render(
        helm,
        None,
        &[
            "--set",
            "postgresql.enabled=false,data.metadataConnection.host=db.example.com",
        ],
    ));
    let url = secret_value(&d, "t-updraft-metadata", "connection");
    assert_eq!(url, "postgres://updraft:@db.example.com:5432/updraft");
}

// ---- values schema -----------------------------------------------------------------------

#[test]
fn bad_values_are_rejected_by_the_schema_with_the_offending_path() {
    let Some(helms) = helms() else { return };
    let cases: &[(&[&str], &[&str])] = &[
        (&["--set", "scheduler.replicas=two"], &["replicas"]),
        (&["--set", "schedular.replicas=2"], &["schedular"]),
        (&["--set", "config.core.paralelism=4"], &["paralelism"]),
        (
            &["--set", "config.database.url=postgres://x"],
            &["database"],
        ),
        (&["--set", "executor=CeleryExecutor"], &["executor"]),
        (&["--set", "images.updraft.digest=latest"], &["digest"]),
        (
            &["--set", "apiServer.defaultUser.role=superuser"],
            &["role"],
        ),
        (
            &["--set", "logs.persistence.accessMode=RWX"],
            &["accessMode"],
        ),
        (
            &["--set", "fernetKeySecretName=Not_A_Name"],
            &["fernetKeySecretName"],
        ),
        // no database at all
        (
            &["--set", "postgresql.enabled=false"],
            &["metadataConnection", "host"],
        ),
        // PgBouncer cannot be configured from a URL the chart never sees
        (
            &[
                "--set",
                "postgresql.enabled=false,data.metadataSecretName=db,pgbouncer.enabled=true",
            ],
            &["configSecretName"],
        ),
    ];
    for (label, helm) in &helms {
        for (args, words) in cases {
            let mut full = vec!["template", "t", "."];
            full.extend(*args);
            let r = run(helm, &full, None);
            assert!(!r.ok, "{label} accepted {args:?}:\n{}", r.stdout);
            assert!(
                r.stderr
                    .contains("values don't meet the specifications of the schema"),
                "{label} {args:?}: not a schema error:\n{}",
                r.stderr
            );
            for w in *words {
                assert!(
                    r.stderr.contains(w),
                    "{label} {args:?}: the error does not name `{w}`:\n{}",
                    r.stderr
                );
            }
        }
    }
}

/// The schema's `config` lists exactly the binary's options, minus the ones the chart sets
/// itself, so an option added to the binary must be added to the chart (and a removed one
/// removed) before the suite passes.
#[test]
fn schema_config_section_matches_the_binary_options() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap(),
    )
    .expect("values.schema.json is JSON");
    let mut in_schema = BTreeSet::new();
    for (section, spec) in schema["properties"]["config"]["properties"]
        .as_object()
        .unwrap()
    {
        assert_eq!(spec["additionalProperties"], false, "config.{section}");
        for key in spec["properties"].as_object().unwrap().keys() {
            in_schema.insert(format!("{section}.{key}"));
        }
    }
    let home = Home::new();
    let list = home.run(&["config", "list", "-o", "json"]).ok().json();
    let managed: BTreeSet<String> = CHART_MANAGED
        .iter()
        .map(|(s, k)| format!("{s}.{k}"))
        .collect();
    let binary: BTreeSet<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}.{}",
                e["section"].as_str().unwrap(),
                e["key"].as_str().unwrap()
            )
        })
        .collect();
    let expected: BTreeSet<String> = binary.difference(&managed).cloned().collect();
    let missing: Vec<_> = expected.difference(&in_schema).collect();
    let extra: Vec<_> = in_schema.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "charts/updraft/values.schema.json `config` is out of date: add {missing:?}, remove {extra:?}"
    );
    for m in &managed {
        assert!(
            binary.contains(m),
            "chart-managed option {m} is not an option of the binary"
        );
    }
}

// ---- the rendered configuration against the binary ---------------------------------------

/// Runs `updraft config list` and `updraft db migrate` with the environment each rendered
/// Updraft container would get (secret references resolved from the render, or stand-ins
/// for existing Secrets), so an option the binary rejects, or a generated key it cannot use,
/// fails here rather than in a crash-looping pod.
#[test]
fn the_binary_accepts_the_rendered_configuration() {
    let Some(helms) = helms() else { return };
    let helm = &helms[0].1;
    for (name, values) in VALUES {
        let d = docs(&render(
            helm,
            *values,
            &[
                "--set",
                "config.core.parallelism=7,config.scheduler.task_heartbeat_timeout=10m",
            ],
        ));
        let mut checked = 0;
        for w in workloads(&d) {
            for c in containers(w) {
                if !s(&c["image"]).contains("updraft") {
                    continue;
                }
                let home = Home::new();
                let db = format!("sqlite://{}/updraft.db", home.path().display());
                let mut home = home;
                for (var, e) in env_of(c) {
                    if var == "UPDRAFT_HOME" {
                        continue;
                    }
                    let value = if let Some(v) = e["value"].as_str() {
                        v.to_string()
                    } else {
                        let r = &e["valueFrom"]["secretKeyRef"];
                        let (secret, key) = (s(&r["name"]), s(&r["key"]));
                        match var.as_str() {
                            // the database is the one thing the test swaps for a local one
                            "UPDRAFT__DATABASE__URL" => db.clone(),
                            _ if has(&d, "Secret", secret) => secret_value(&d, secret, key),
                            // an existing Secret: a value of the documented shape
                            "UPDRAFT__CORE__FERNET_KEY" => {
                                "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=".into()
                            }
                            _ => "a-secret-of-at-least-thirty-two-characters".into(),
                        }
                    };
                    home = home.with_env(&var, &value);
                }
                let ctx = format!("{name} values, container {}", s(&c["name"]));
                let list = home.run(&["config", "list", "-o", "json"]);
                assert_eq!(
                    list.code, 0,
                    "{ctx}: the binary rejects its env:\n{}",
                    list.stderr
                );
                let list = list.json();
                let value = |section: &str, key: &str| {
                    list.as_array()
                        .unwrap()
                        .iter()
                        .find(|e| e["section"] == section && e["key"] == key)
                        .map(|e| (e["value"].clone(), e["source"].clone()))
                        .unwrap()
                };
                assert_eq!(value("core", "parallelism").0, "7", "{ctx}");
                assert_eq!(value("core", "dags_folder").0, "/opt/updraft/dags", "{ctx}");
                assert_eq!(
                    value("core", "fernet_key").1,
                    "env UPDRAFT__CORE__FERNET_KEY",
                    "{ctx}"
                );
                // the Fernet key (generated by the chart or a stand-in) really encrypts
                home.run(&["db", "migrate"]).ok();
                home.run(&["variables", "set", "k", "v"]).ok();
                let got = home.run(&["variables", "get", "k"]).ok();
                assert_eq!(got.stdout.trim(), "v", "{ctx}");
                checked += 1;
            }
        }
        assert!(
            checked >= 4,
            "{name}: only {checked} Updraft containers found"
        );
    }
}

#[test]
fn generated_keys_have_the_shape_the_binary_needs() {
    let Some(helms) = helms() else { return };
    for (label, helm) in &helms {
        let d = docs(&render(helm, None, &[]));
        let fernet = secret_value(&d, "t-updraft-fernet-key", "fernet-key");
        assert_eq!(base64_decode(&fernet, true).len(), 32, "{label}: {fernet}");
        let api = secret_value(&d, "t-updraft-api-secret-key", "api-secret-key");
        assert!(api.len() >= 32, "{label}");
        let admin = secret_value(&d, "t-updraft-admin-password", "password");
        assert!(admin.len() >= 16, "{label}");
        for secret in [
            "t-updraft-fernet-key",
            "t-updraft-api-secret-key",
            "t-updraft-postgresql",
        ] {
            assert_eq!(
                get(&d, "Secret", secret)["metadata"]["annotations"]["helm.sh/resource-policy"],
                "keep",
                "{label}: {secret} must survive `helm uninstall`"
            );
        }
        // the metadata URL carries the bundled PostgreSQL's generated password
        let pg = secret_value(&d, "t-updraft-postgresql", "password");
        let url = secret_value(&d, "t-updraft-metadata", "connection");
        assert_eq!(
            url,
            format!("postgres://postgres:{pg}@t-updraft-postgresql:5432/updraft")
        );
    }
}

/// The default user's init container, run as the pod would run it (bash, the rendered script,
/// the rendered environment with a local database): it creates the user once, and a second
/// start leaves the account (and a changed password) alone.
#[test]
fn default_user_init_container_creates_the_admin_once() {
    let Some(helms) = helms() else { return };
    // names that a shell would mangle if the script quoted them badly
    let d = docs(&render(
        &helms[0].1,
        None,
        &[
            "--set-string",
            "apiServer.defaultUser.firstName=Ada $HOME 'x' \"y\"",
            "--set",
            "apiServer.defaultUser.email=ada@example.com",
        ],
    ));
    let c = container(
        get(&d, "Deployment", "t-updraft-api-server"),
        "create-default-user",
    );
    let script = s(&seq(&c["args"])[0]).to_string();
    assert_eq!(
        c["command"],
        serde_yaml::from_str::<Yaml>("[/bin/bash, -c]").unwrap()
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_updraft"))
        .parent()
        .unwrap()
        .to_path_buf();
    let home = Home::new();
    let password = secret_value(&d, "t-updraft-admin-password", "password");
    let run_init = |home: &Home| {
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-c", &script])
            .env_clear()
            .env("PATH", path)
            .env("HOME", home.path())
            .env("UPDRAFT_HOME", home.path())
            .env(
                "UPDRAFT__DATABASE__URL",
                format!("sqlite://{}/updraft.db", home.path().display()),
            )
            .env("UPDRAFT_DEFAULT_PASSWORD", &password);
        for (var, e) in env_of(c) {
            if let Some(v) = e["value"].as_str()
                && var != "UPDRAFT_HOME"
                && !var.starts_with("UPDRAFT__CORE__DAGS")
            {
                cmd.env(&var, v);
            }
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "init script failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    home.run(&["db", "migrate"]).ok();
    run_init(&home);
    let users = home.run(&["users", "list", "-o", "json"]).ok().json();
    assert_eq!(users[0]["username"], "admin");
    assert_eq!(users[0]["role"], "admin");
    assert_eq!(users[0]["first_name"], "Ada $HOME 'x' \"y\"");
    assert_eq!(users[0]["email"], "ada@example.com");
    assert!(users[0]["last_name"].is_null());
    home.run(&[
        "users",
        "reset-password",
        "--username",
        "admin",
        "--password",
        "changed",
    ])
    .ok();
    let out = run_init(&home);
    assert!(out.contains("user admin exists"), "{out}");
    assert_eq!(
        home.run(&["users", "list", "-o", "json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

// ---- against the test apiserver ----------------------------------------------------------

fn kube(kubectl: &str, kubeconfig: &str, args: &[&str], stdin: Option<&str>) -> Ran {
    let mut full = vec!["--kubeconfig", kubeconfig];
    full.extend(args);
    run(kubectl, &full, stdin)
}

/// A namespace of its own for each test run.
fn namespace(kubectl: &str, kubeconfig: &str, prefix: &str) -> String {
    let ns = format!("{prefix}-{}", std::process::id());
    let r = kube(kubectl, kubeconfig, &["create", "namespace", &ns], None);
    assert!(r.ok || r.stderr.contains("AlreadyExists"), "{}", r.stderr);
    ns
}

fn server_version(kubectl: &str, kubeconfig: &str) -> String {
    let out = must(
        "kubectl version",
        kube(kubectl, kubeconfig, &["version", "-o", "json"], None),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_render_passes_a_server_side_dry_run() {
    let (Some(helms), Some((kubectl, kubeconfig))) = (helms(), cluster()) else {
        return;
    };
    let version = server_version(&kubectl, &kubeconfig);
    let ns = namespace(&kubectl, &kubeconfig, "dry-run");
    let tasks = kube(
        &kubectl,
        &kubeconfig,
        &["create", "namespace", "updraft-tasks"],
        None,
    );
    assert!(
        tasks.ok || tasks.stderr.contains("AlreadyExists"),
        "{}",
        tasks.stderr
    );
    for (label, helm) in &helms {
        for (name, values) in VALUES {
            let mut args = vec![
                "template",
                "t",
                ".",
                "--namespace",
                &ns,
                "--kube-version",
                &version,
            ];
            args.extend(values_args(*values));
            let text = must(&format!("{label} template {name}"), run(helm, &args, None));
            let r = kube(
                &kubectl,
                &kubeconfig,
                &["apply", "--dry-run=server", "-f", "-"],
                Some(&text),
            );
            assert!(
                r.ok,
                "{label}: the apiserver ({version}) refuses the {name} render:\n{}{}",
                r.stdout, r.stderr
            );
            let accepted = r
                .stdout
                .lines()
                .filter(|l| l.contains("(server dry run)"))
                .count();
            assert_eq!(accepted, docs(&text).len(), "{label} {name}:\n{}", r.stdout);
        }
    }
    // and the server really validates: a broken object is refused
    let text = render(
        &helms[0].1,
        None,
        &["--namespace", &ns, "--kube-version", &version],
    );
    let broken = text.replacen("containerPort: 8080", "containerPort: 80800", 1);
    let r = kube(
        &kubectl,
        &kubeconfig,
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&broken),
    );
    assert!(!r.ok, "the apiserver accepted port 80800");
    kube(
        &kubectl,
        &kubeconfig,
        &["delete", "namespace", &ns, "--wait=false"],
        None,
    );
}

/// `helm install`, then `helm upgrade` with other values: the generated Fernet key, API secret
/// key, admin password and database password are read back with `lookup`, never regenerated;
/// `helm uninstall` leaves them for a reinstall.
#[test]
fn generated_secrets_survive_upgrade_and_uninstall() {
    let (Some(helms), Some((kubectl, kubeconfig))) = (helms(), cluster()) else {
        return;
    };
    for (label, helm) in &helms {
        let ns = namespace(
            &kubectl,
            &kubeconfig,
            &format!("keep-{}", label.replace(' ', "")),
        );
        let helm_args = |extra: &[&str]| {
            let mut a: Vec<String> = vec!["--kubeconfig".into(), kubeconfig.clone()];
            a.extend(["--namespace".into(), ns.clone()]);
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let helm_run = |extra: &[&str]| {
            let a = helm_args(extra);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            must(&format!("{label} {}", extra.join(" ")), run(helm, &a, None))
        };
        let secret = |name: &str, key: &str| {
            let out = must(
                "kubectl get secret",
                kube(
                    &kubectl,
                    &kubeconfig,
                    &["get", "secret", name, "-n", &ns, "-o", "json"],
                    None,
                ),
            );
            let v: Value = serde_json::from_str(&out).unwrap();
            v["data"][key].as_str().unwrap().to_string()
        };
        let keys = [
            ("t-updraft-fernet-key", "fernet-key"),
            ("t-updraft-api-secret-key", "api-secret-key"),
            ("t-updraft-admin-password", "password"),
            ("t-updraft-postgresql", "password"),
            ("t-updraft-metadata", "connection"),
        ];
        helm_run(&["install", "t", "."]);
        let first: Vec<String> = keys.iter().map(|(n, k)| secret(n, k)).collect();
        helm_run(&["upgrade", "t", ".", "--set", "config.core.parallelism=8"]);
        let second: Vec<String> = keys.iter().map(|(n, k)| secret(n, k)).collect();
        assert_eq!(
            first, second,
            "{label}: an upgrade changed a generated secret"
        );
        let sched = must(
            "kubectl get deployment",
            kube(
                &kubectl,
                &kubeconfig,
                &[
                    "get",
                    "deployment",
                    "t-updraft-scheduler",
                    "-n",
                    &ns,
                    "-o",
                    "json",
                ],
                None,
            ),
        );
        assert!(
            sched.contains("UPDRAFT__CORE__PARALLELISM"),
            "{label}: upgrade not applied"
        );
        helm_run(&["uninstall", "t"]);
        for (i, (n, k)) in keys.iter().enumerate() {
            if *n == "t-updraft-metadata" {
                continue;
            }
            assert_eq!(
                secret(n, k),
                first[i],
                "{label}: {n} did not survive uninstall"
            );
        }
        // a reinstall finds the kept secrets and uses them again
        helm_run(&["install", "t", "."]);
        assert_eq!(
            secret("t-updraft-fernet-key", "fernet-key"),
            first[0],
            "{label}"
        );
        assert_eq!(
            secret("t-updraft-metadata", "connection"),
            first[4],
            "{label}"
        );
        helm_run(&["uninstall", "t"]);
        kube(
            &kubectl,
            &kubeconfig,
            &["delete", "namespace", &ns, "--wait=false"],
            None,
        );
    }
}

/// DAG files given in `dags.files` land in a ConfigMap; the kubelet mounts it as symlinks into a
/// hidden timestamped directory (`hello.yaml -> ..data/hello.yaml`, `..data -> ..2026_…`). The
/// scheduler must see each DAG once in that layout, and run it.
#[test]
fn dags_from_the_chart_configmap_are_found_once_and_run() {
    let Some(helms) = helms() else { return };
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("hello.yaml");
    std::fs::write(&file, HELLO).unwrap();
    let set_file = format!("dags.files.hello\\.yaml={}", file.display());
    let d = docs(&render(&helms[0].1, None, &["--set-file", &set_file]));
    let cm = get(&d, "ConfigMap", "t-updraft-dags");
    let sched = get(&d, "Deployment", "t-updraft-scheduler");
    let vol = seq(&sched["spec"]["template"]["spec"]["volumes"])
        .iter()
        .find(|v| v["name"] == "dags")
        .unwrap();
    assert_eq!(vol["configMap"]["name"], "t-updraft-dags");

    let home = Home::new();
    let dags = home.path().join("mounted-dags");
    let stamp = dags.join("..2026_11_22_05_00_00.000000001");
    std::fs::create_dir_all(&stamp).unwrap();
    for (name, text) in cm["data"].as_mapping().unwrap() {
        std::fs::write(stamp.join(s(name)), s(text)).unwrap();
        std::os::unix::fs::symlink(format!("..data/{}", s(name)), dags.join(s(name))).unwrap();
    }
    std::os::unix::fs::symlink(stamp.file_name().unwrap(), dags.join("..data")).unwrap();
    let home = home.with_env("UPDRAFT__CORE__DAGS_FOLDER", dags.to_str().unwrap());
    home.run(&["db", "migrate"]).ok();
    let list = home.run(&["dags", "list", "-o", "json"]).ok().json();
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dag_id"].clone())
        .collect();
    assert_eq!(ids, ["hello"], "{list}");
    home.run(&["dags", "test", "hello"]).ok();
}

// ---- the rendered pods, run as local processes -------------------------------------------

/// A process started from a rendered container; killed when dropped.
struct PodProcess {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request on a fresh connection: status and body, or `None` if nobody listens.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.parse().ok()?, body.to_string()))
}

/// The environment a rendered container gets, with Secrets resolved from the render and the
/// pod's volumes and database replaced by local ones.
fn pod_env(docs: &[Yaml], c: &Yaml, local: &BTreeMap<&str, String>) -> Vec<(String, String)> {
    env_of(c)
        .into_iter()
        .map(|(var, e)| {
            let value = if let Some(v) = local.get(var.as_str()) {
                v.clone()
            } else if let Some(v) = e["value"].as_str() {
                v.to_string()
            } else {
                let r = &e["valueFrom"]["secretKeyRef"];
                secret_value(docs, s(&r["name"]), s(&r["key"]))
            };
            (var, value)
        })
        .collect()
}

/// Runs a rendered container's command and args with `env`; `updraft` resolves to this
/// repository's binary.
fn start_container(c: &Yaml, env: &[(String, String)], log: PathBuf) -> PodProcess {
    let mut argv: Vec<String> = seq(&c["command"])
        .iter()
        .chain(c["args"].as_sequence().into_iter().flatten())
        .map(|a| s(a).to_string())
        .collect();
    if argv[0] == "updraft" {
        argv[0] = env!("CARGO_BIN_EXE_updraft").to_string();
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_updraft")).parent().unwrap();
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
    PodProcess { child, log }
}

fn run_to_completion(c: &Yaml, env: &[(String, String)], log: PathBuf) {
    let mut p = start_container(c, env, log);
    let status = p.child.wait().unwrap();
    assert!(
        status.success(),
        "init container {} failed:\n{}",
        s(&c["name"]),
        std::fs::read_to_string(&p.log).unwrap_or_default()
    );
}

/// Polls a rendered httpGet probe until it answers 200.
fn probe_until_ok(p: &mut PodProcess, c: &Yaml, probe: &str, port: u16) -> String {
    let path = s(&c[probe]["httpGet"]["path"]).to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some((200, body)) = http(port, "GET", &path, "") {
            return body;
        }
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!(
                "{} exited ({status}) before its {probe} passed:\n{}",
                s(&c["name"]),
                std::fs::read_to_string(&p.log).unwrap_or_default()
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{probe} {path} of {} never answered 200:\n{}",
            s(&c["name"]),
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn container_port(c: &Yaml, name: &str) -> u16 {
    seq(&c["ports"])
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no port {name}")) as u16
}

/// The scheduler and API server pods of the default render, played as local processes with
/// their rendered commands, init containers, environment and generated Secrets (one SQLite
/// database stands in for the bundled PostgreSQL): the init containers migrate and create the
/// admin, both probes answer 200 on the rendered paths and ports, and the admin logs in with
/// the password from the rendered Secret.
#[test]
fn rendered_pods_start_pass_their_probes_and_the_admin_logs_in() {
    let Some(helms) = helms() else { return };
    let health_port = free_port();
    let api_port = free_port();
    let d = docs(&render(
        &helms[0].1,
        None,
        &["--set", &format!("scheduler.healthCheckPort={health_port}")],
    ));
    let root = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/metadata.db", root.path().display());
    let mut pods = Vec::new();
    for (deployment, main) in [
        ("t-updraft-scheduler", "scheduler"),
        ("t-updraft-api-server", "api-server"),
    ] {
        let w = get(&d, "Deployment", deployment);
        let dir = root.path().join(main);
        for sub in ["home", "dags", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let local: BTreeMap<&str, String> = [
            ("UPDRAFT__DATABASE__URL", db.clone()),
            ("UPDRAFT_HOME", dir.join("home").display().to_string()),
            (
                "UPDRAFT__CORE__DAGS_FOLDER",
                dir.join("dags").display().to_string(),
            ),
            (
                "UPDRAFT__LOGGING__BASE_LOG_FOLDER",
                dir.join("logs").display().to_string(),
            ),
            // the API server's container port, mapped to a free one here
            ("UPDRAFT__API__PORT", api_port.to_string()),
        ]
        .into_iter()
        .collect();
        for init in seq(&w["spec"]["template"]["spec"]["initContainers"]) {
            let env = pod_env(&d, init, &local);
            run_to_completion(init, &env, dir.join(format!("{}.log", s(&init["name"]))));
        }
        let c = container(w, main);
        let env = pod_env(&d, c, &local);
        pods.push((c, start_container(c, &env, dir.join(format!("{main}.log")))));
    }
    let (sched, mut sched_proc) = pods.remove(0);
    let (api, mut api_proc) = pods.remove(0);
    assert_eq!(container_port(sched, "health"), health_port);
    assert_eq!(container_port(api, "api"), 8080);
    for probe in ["startupProbe", "livenessProbe"] {
        let body = probe_until_ok(&mut sched_proc, sched, probe, health_port);
        assert!(body.contains("\"status\":\"healthy\""), "{body}");
    }
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let body = probe_until_ok(&mut api_proc, api, probe, api_port);
        assert!(body.contains("metadatabase"), "{body}");
    }
    let password = secret_value(&d, "t-updraft-admin-password", "password");
    let login = format!(r#"{{"username": "admin", "password": "{password}"}}"#);
    let (status, body) = http(api_port, "POST", "/auth/token", &login).expect("the API answers");
    assert!(
        status == 200 || status == 201,
        "login failed ({status}): {body}"
    );
    let token: Value = serde_json::from_str(&body).unwrap();
    assert!(
        token["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    let wrong = login.replace(&password, "wrong");
    assert_eq!(
        http(api_port, "POST", "/auth/token", &wrong).unwrap().0,
        401
    );
}

/// `executor: local_api` points the task workers at the api-server Service's Task Execution API,
/// with options the binary accepts.
#[test]
fn local_api_executor_reaches_the_api_server_service() {
    let Some(helms) = helms() else { return };
    let d = docs(&render(&helms[0].1, None, &["--set", "executor=local_api"]));
    let c = container(get(&d, "Deployment", "t-updraft-scheduler"), "scheduler");
    let env = env_of(c);
    assert_eq!(env["UPDRAFT__CORE__EXECUTOR"]["value"], "local_api");
    assert_eq!(
        env["UPDRAFT__CORE__EXECUTION_API_SERVER_URL"]["value"],
        "http://t-updraft-api-server:8080/execution"
    );
    let svc = get(&d, "Service", "t-updraft-api-server");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    let mut home = Home::new();
    for var in [
        "UPDRAFT__CORE__EXECUTOR",
        "UPDRAFT__CORE__EXECUTION_API_SERVER_URL",
    ] {
        home = home.with_env(var, s(&env[var]["value"]));
    }
    let out = home
        .run(&["config", "get", "core", "execution_api_server_url"])
        .ok();
    assert_eq!(
        out.stdout.trim(),
        "http://t-updraft-api-server:8080/execution"
    );
}

/// `executor: kubernetes` gives the scheduler the worker image, the release namespace, the
/// worker service account, the api-server Service's Task Execution API and a mounted pod
/// template that the executor accepts, whose worker writes to the logs volume.
#[test]
fn kubernetes_executor_gets_its_image_pod_template_and_the_api_server_service() {
    let Some(helms) = helms() else { return };
    let d = docs(&render(
        &helms[0].1,
        None,
        &["--set", "executor=kubernetes,images.updraft.tag=1.2.3"],
    ));
    let sched = get(&d, "Deployment", "t-updraft-scheduler");
    let env = env_of(container(sched, "scheduler"));
    let v = |k: &str| s(&env[k]["value"]).to_string();
    assert_eq!(v("UPDRAFT__CORE__EXECUTOR"), "kubernetes");
    assert_eq!(
        v("UPDRAFT__CORE__EXECUTION_API_SERVER_URL"),
        "http://t-updraft-api-server:8080/execution"
    );
    assert_eq!(v("UPDRAFT__KUBERNETES__NAMESPACE"), "ns");
    assert_eq!(v("UPDRAFT__KUBERNETES__WORKER_IMAGE"), "updraft:1.2.3");
    assert_eq!(
        v("UPDRAFT__KUBERNETES__WORKER_SERVICE_ACCOUNT_NAME"),
        "t-updraft-worker"
    );
    assert_eq!(v("UPDRAFT__KUBERNETES__IN_CLUSTER"), "true");
    let template_path = v("UPDRAFT__KUBERNETES__POD_TEMPLATE_FILE");
    let mount = seq(&container(sched, "scheduler")["volumeMounts"])
        .iter()
        .find(|m| m["name"] == "pod-template")
        .expect("the pod template is mounted")
        .clone();
    assert!(template_path.starts_with(s(&mount["mountPath"])));
    assert_eq!(
        sched["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );

    let cm = get(&d, "ConfigMap", "t-updraft-pod-template");
    let text = s(&cm["data"]["pod_template_file.yaml"]);
    let template = updraft_kube_executor::PodConfig::parse_template(text).expect("a pod template");
    let base = &template["spec"]["containers"][0];
    assert_eq!(base["name"], "base");
    assert!(
        base["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "logs" && m["mountPath"] == "/opt/updraft/logs"),
        "{text}"
    );
    assert_eq!(template["spec"]["serviceAccountName"], "t-updraft-worker");
    assert_eq!(template["spec"]["automountServiceAccountToken"], false);
    // the worker never gets the database URL or a key
    assert!(
        !text.contains("DATABASE") && !text.contains("FERNET"),
        "{text}"
    );

    // The binary accepts the options the chart sets.
    let mut home = Home::new();
    for (k, e) in &env {
        if k.starts_with("UPDRAFT__KUBERNETES__") || k == "UPDRAFT__CORE__EXECUTOR" {
            home = home.with_env(k, s(&e["value"]));
        }
    }
    let out = home
        .run(&["config", "get", "kubernetes", "worker_image"])
        .ok();
    assert_eq!(out.stdout.trim(), "updraft:1.2.3");

    // A podTemplate of one's own replaces the chart's.
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("pod-template.yaml");
    std::fs::write(
        &values,
        "executor: kubernetes\npodTemplate: |\n  apiVersion: v1\n  kind: Pod\n  spec:\n    nodeSelector:\n      pool: tasks\n",
    )
    .unwrap();
    let d = docs(&render(
        &helms[0].1,
        None,
        &["-f", values.to_str().unwrap()],
    ));
    let cm = get(&d, "ConfigMap", "t-updraft-pod-template");
    let template =
        updraft_kube_executor::PodConfig::parse_template(s(&cm["data"]["pod_template_file.yaml"]))
            .expect("a pod template");
    assert_eq!(template["spec"]["nodeSelector"]["pool"], "tasks");
}
