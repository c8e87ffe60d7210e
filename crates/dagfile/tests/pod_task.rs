//! `operator: kubernetes_pod` tasks in YAML DAG files: fields, defaults, `default_args`, and
//! errors naming file, line and field.

use serde_json::json;
use updraft_core::model::{OnFinishAction, Operator, PodOperatorSpec};
use updraft_dagfile::{ParseOptions, parse_dag_file};

fn pod_of(text: &str, task: usize) -> PodOperatorSpec {
    let dags = parse_dag_file("dags/pod.yaml", text, &ParseOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    match &dags[0].tasks[task].operator {
        Operator::KubernetesPod(p) => (**p).clone(),
        other => panic!("not a pod task: {other:?}"),
    }
}

#[track_caller]
fn assert_error(text: &str, line: u32, fragments: &[&str]) {
    let e = match parse_dag_file("dags/pod.yaml", text, &ParseOptions::default()) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert_eq!(e.file, "dags/pod.yaml");
    assert_eq!(e.line, Some(line), "wrong line for: {e}");
    for f in fragments {
        assert!(e.message.contains(f), "`{f}` not in: {}", e.message);
    }
}

const FULL: &str = r#"
dag_id: pods
default_args:
  namespace: jobs
  startup_timeout_seconds: 300
  retries: 2
tasks:
  - task_id: hello
    bash_command: echo hi
  - task_id: transform
    operator: kubernetes_pod
    upstream: hello
    image: registry.example.com/etl:1.4
    cmds: ["python", "-m", "etl"]
    arguments: ["--date", "{{ ds }}", 3]
    env_vars:
      STAGE: prod
      PORT: 8080
    env_from:
      - configMapRef: {name: etl-config}
    resources:
      requests: {cpu: 500m, memory: 1Gi}
      limits: {memory: 2Gi}
    volumes:
      - name: scratch
        emptyDir: {}
    volume_mounts:
      - {name: scratch, mountPath: /scratch}
    node_selector: {pool: batch}
    tolerations:
      - {key: dedicated, operator: Equal, value: batch, effect: NoSchedule}
    affinity:
      nodeAffinity: {}
    service_account_name: etl
    labels: {team: data}
    annotations: {owner: "data@example.com"}
    image_pull_secrets: regcred, other
    image_pull_policy: IfNotPresent
    get_logs: false
    on_finish_action: delete_succeeded_pod
  - task_id: list_env
    operator: kubernetes_pod
    image: busybox
    env_vars:
      - {name: A, value: "1"}
      - name: TOKEN
        valueFrom: {secretKeyRef: {name: api, key: token}}
"#;

#[test]
fn every_pod_field_is_parsed() {
    let p = pod_of(FULL, 1);
    assert_eq!(p.image, "registry.example.com/etl:1.4");
    assert_eq!(p.cmds, ["python", "-m", "etl"]);
    assert_eq!(p.arguments, ["--date", "{{ ds }}", "3"]);
    // in the order written
    let env: Vec<(&str, Option<&str>)> = p
        .env_vars
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(env, [("STAGE", Some("prod")), ("PORT", Some("8080"))]);
    assert_eq!(p.env_vars.len(), 2);
    assert_eq!(
        p.env_from,
        vec![json!({"configMapRef": {"name": "etl-config"}})]
    );
    assert_eq!(
        p.resources,
        Some(json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}))
    );
    assert_eq!(p.volumes, vec![json!({"name": "scratch", "emptyDir": {}})]);
    assert_eq!(
        p.volume_mounts,
        vec![json!({"name": "scratch", "mountPath": "/scratch"})]
    );
    assert_eq!(p.node_selector["pool"], "batch");
    assert_eq!(p.tolerations[0]["effect"], "NoSchedule");
    assert_eq!(p.affinity, Some(json!({"nodeAffinity": {}})));
    assert_eq!(p.service_account_name.as_deref(), Some("etl"));
    assert_eq!(p.labels["team"], "data");
    assert_eq!(p.annotations["owner"], "data@example.com");
    assert_eq!(p.image_pull_secrets, ["regcred", "other"]);
    assert_eq!(p.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert!(!p.get_logs);
    assert_eq!(p.on_finish_action, OnFinishAction::DeleteSucceededPod);
    // from default_args
    assert_eq!(p.namespace.as_deref(), Some("jobs"));
    assert_eq!(p.startup_timeout_seconds, 300);

    let l = pod_of(FULL, 2);
    assert_eq!(l.env_vars[0].value.as_deref(), Some("1"));
    assert_eq!(
        l.env_vars[1].value_from,
        Some(json!({"secretKeyRef": {"name": "api", "key": "token"}}))
    );
    // pod defaults in default_args do not make the bash task a pod task
    let dags = parse_dag_file("dags/pod.yaml", FULL, &ParseOptions::default()).unwrap();
    assert!(matches!(dags[0].tasks[0].operator, Operator::Bash(_)));
    assert_eq!(dags[0].tasks[1].retries, 2);
    assert_eq!(dags[0].tasks[1].operator_name(), "KubernetesPodOperator");
}

#[test]
fn defaults_are_airflows_and_survive_a_round_trip() {
    let p = pod_of(
        "dag_id: d\ntasks:\n  - task_id: t\n    operator: kubernetes_pod\n    image: busybox\n",
        0,
    );
    assert_eq!(p, PodOperatorSpec::new("busybox"));
    assert!(p.get_logs);
    assert_eq!(p.on_finish_action, OnFinishAction::DeletePod);
    assert_eq!(p.startup_timeout_seconds, 120);
    assert_eq!(p.namespace, None);
    let full = pod_of(FULL, 1);
    let json = serde_json::to_string(&Operator::KubernetesPod(Box::new(full.clone()))).unwrap();
    let back: Operator = serde_json::from_str(&json).unwrap();
    assert_eq!(back, Operator::KubernetesPod(Box::new(full)));
    // defaults are left out of the stored form
    assert_eq!(
        serde_json::to_value(Operator::KubernetesPod(Box::new(p))).unwrap(),
        json!({"type": "kubernetes_pod", "image": "busybox"})
    );
}

#[test]
fn errors_name_the_line_and_field() {
    let head = "dag_id: d\ntasks:\n  - task_id: t\n    operator: kubernetes_pod\n";
    assert_error(
        head,
        4,
        &["task `t` is a `kubernetes_pod` task without `image`"],
    );
    let t = |extra: &str| format!("{head}    image: busybox\n{extra}");
    assert_error(
        &t("    cmds: echo\n"),
        6,
        &["`cmds` of task `t` must be a list of strings"],
    );
    assert_error(
        &t("    arguments: [a, {b: c}]\n"),
        6,
        &["each entry of `arguments` of task `t` must be a string"],
    );
    assert_error(
        &t("    on_finish_action: delete\n"),
        6,
        &[
            "`on_finish_action` of task `t`",
            "delete_pod, delete_succeeded_pod, keep_pod",
        ],
    );
    assert_error(
        &t("    image_pull_policy: always\n"),
        6,
        &[
            "`image_pull_policy` of task `t` `always` is not valid",
            "IfNotPresent",
        ],
    );
    assert_error(
        &t("    startup_timeout_seconds: 0\n"),
        6,
        &["`startup_timeout_seconds` of task `t` must be a whole number of seconds of at least 1"],
    );
    assert_error(
        &t("    get_logs: yes please\n"),
        6,
        &["`get_logs` of task `t` must be"],
    );
    assert_error(
        &t("    env_vars:\n      - {name: A}\n"),
        7,
        &["`A` needs exactly one of `value` and `valueFrom`"],
    );
    assert_error(
        &t("    env_vars:\n      A: [1]\n"),
        7,
        &["`env_vars` of task `t`: `A` must be a string"],
    );
    assert_error(
        &t("    volume_mounts:\n      - {name: data, mountPath: /data}\n"),
        7,
        &["`data` is not one of the task's `volumes`"],
    );
    assert_error(
        &t("    volumes:\n      - emptyDir: {}\n"),
        7,
        &["each entry of `volumes` of task `t` needs a `name`"],
    );
    assert_error(
        &t("    labels: {team: \"data eng\"}\n"),
        6,
        &["`labels` of task `t`: the value of `team` must be at most 63"],
    );
    assert_error(
        &t("    namespace: Jobs\n"),
        6,
        &["namespace name", "`Jobs`"],
    );
    assert_error(
        &t("    resources: {request: {cpu: 1}}\n"),
        6,
        &["unknown key `request`", "requests, limits"],
    );
    assert_error(
        &t("    env_from: [{name: x}]\n"),
        6,
        &["needs `configMapRef` or `secretRef`"],
    );
    assert_error(
        &t("    imagee: x\n"),
        6,
        &["unknown key `imagee`", "did you mean `image`"],
    );
    assert_error(
        &t("    bash_command: echo\n"),
        6,
        &["is a `kubernetes_pod` task but sets `bash_command`"],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: t\n    bash_command: echo\n    image: busybox\n",
        5,
        &[
            "sets `image`, a field of `kubernetes_pod` tasks",
            "operator: kubernetes_pod",
        ],
    );
    assert_error(
        "dag_id: d\ntasks:\n  - task_id: t\n    operator: KubernetesPodOperator\n",
        4,
        &["write `kubernetes_pod`"],
    );
}
