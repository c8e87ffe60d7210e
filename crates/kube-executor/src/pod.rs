//! Building the pod of one task try (pure: no IO).
//!
//! The pod runs `updraft task execute` in a container named [`WORKER_CONTAINER`]; the workload
//! JSON travels in the environment variable `UPDRAFT_TASK_WORKLOAD`, not on the command line and
//! not in a Secret. The token inside is scoped to one try and short-lived; whoever may read the
//! pod (`kubectl get pod -o yaml`) sees it, which is the same audience that may exec into it. A
//! Secret per try would double the API calls per task and the RBAC surface for no stronger
//! guarantee within the namespace. Kubernetes caps an object at about 1.5 MB; a workload larger
//! than [`MAX_WORKLOAD_BYTES`] is refused with an error instead of a failed create.
//!
//! Labels carry the try's identity sanitised for label rules; annotations carry the full values.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use updraft_executor::TaskTry;

/// The container that runs the worker; `pod_override` and the template merge into it by name.
pub const WORKER_CONTAINER: &str = "base";
/// The environment variable holding the workload JSON.
pub const WORKLOAD_ENV: &str = "UPDRAFT_TASK_WORKLOAD";
/// The largest workload put into a pod.
pub const MAX_WORKLOAD_BYTES: usize = 512 * 1024;

/// Label marking pods this executor created; its value is the executor's instance name.
pub const LABEL_MANAGED_BY: &str = "updraft.apache.org/executor";
pub const LABEL_DAG_ID: &str = "dag_id";
pub const LABEL_TASK_ID: &str = "task_id";
pub const LABEL_RUN_ID: &str = "run_id";
pub const LABEL_TRY_NUMBER: &str = "try_number";
pub const LABEL_MAP_INDEX: &str = "map_index";
/// The try's task-instance id (a UUID is a valid label value as is): the key adoption uses.
pub const LABEL_TI_ID: &str = "ti_id";
pub const ANNOTATION_PREFIX: &str = "updraft.apache.org/";

/// Errors building a pod.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("pod_template_file: {0}")]
    Template(String),
    #[error("pod_override: {0}")]
    Override(String),
    #[error("the workload is {0} bytes, more than the {MAX_WORKLOAD_BYTES} a pod may carry")]
    WorkloadTooLarge(usize),
}

/// What the pod of every try shares.
#[derive(Debug, Clone, Default)]
pub struct PodConfig {
    pub namespace: String,
    pub worker_image: String,
    /// The parsed `pod_template_file`, if any (a Pod manifest).
    pub template: Option<Value>,
    pub service_account: Option<String>,
    /// The value of [`LABEL_MANAGED_BY`]; scopes adoption to this scheduler deployment.
    pub instance: String,
    /// The command before `task execute`, default `["updraft"]`.
    pub worker_command: Vec<String>,
}

impl PodConfig {
    /// Parses a pod template (YAML or JSON); it must be a mapping, `kind: Pod` if it says.
    pub fn parse_template(text: &str) -> Result<Value, BuildError> {
        let v: Value =
            serde_yaml::from_str(text).map_err(|e| BuildError::Template(e.to_string()))?;
        if !v.is_object() {
            return Err(BuildError::Template("not a mapping".into()));
        }
        if let Some(k) = v.get("kind").and_then(Value::as_str)
            && k != "Pod"
        {
            return Err(BuildError::Template(format!("kind is {k}, expected Pod")));
        }
        Ok(v)
    }
}

/// A label value: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
/// Other characters become `_`... then, when the result differs from the input or is too long,
/// it ends with `-` and 10 hex digits of the input's SHA-256 so distinct inputs stay distinct.
pub fn label_value(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed == s && s.len() <= 63 {
        return s.to_string();
    }
    let hash = hex::encode(&Sha256::digest(s.as_bytes())[..5]);
    let keep: String = trimmed.chars().take(63 - 11).collect();
    let keep = keep.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if keep.is_empty() {
        hash
    } else {
        format!("{keep}-{hash}")
    }
}

/// A pod name (DNS-1123 subdomain kept to 63 characters so it is also a valid label value and
/// hostname): `dag-task-<10 hex of the ti id and try>`.
pub fn pod_name(t: &TaskTry) -> String {
    let dns = |s: &str| -> String {
        let m: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        m.trim_matches('-').to_string()
    };
    let hash =
        hex::encode(&Sha256::digest(format!("{}/{}", t.ti_id, t.try_number).as_bytes())[..5]);
    let mut stem = format!("{}-{}", dns(&t.dag_id), dns(&t.task_id));
    stem.truncate(63 - 11);
    let stem = stem.trim_matches('-');
    if stem.is_empty() {
        format!("try-{hash}")
    } else {
        format!("{stem}-{hash}")
    }
}

/// The labels identifying a try's pod.
pub fn labels(t: &TaskTry, instance: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(LABEL_MANAGED_BY.into(), label_value(instance).into());
    m.insert(LABEL_DAG_ID.into(), label_value(&t.dag_id).into());
    m.insert(LABEL_TASK_ID.into(), label_value(&t.task_id).into());
    m.insert(LABEL_RUN_ID.into(), label_value(&t.run_id).into());
    m.insert(LABEL_TRY_NUMBER.into(), t.try_number.to_string().into());
    m.insert(
        LABEL_MAP_INDEX.into(),
        label_value(&t.map_index.to_string()).into(),
    );
    m.insert(LABEL_TI_ID.into(), t.ti_id.to_string().into());
    m
}

/// The annotations holding the try's identity unabridged.
pub fn annotations(t: &TaskTry) -> Map<String, Value> {
    let mut m = Map::new();
    let a = |k: &str| format!("{ANNOTATION_PREFIX}{k}");
    m.insert(a("dag_id"), t.dag_id.clone().into());
    m.insert(a("task_id"), t.task_id.clone().into());
    m.insert(a("run_id"), t.run_id.clone().into());
    m.insert(a("try_number"), t.try_number.to_string().into());
    m.insert(a("map_index"), t.map_index.to_string().into());
    m.insert(a("ti_id"), t.ti_id.to_string().into());
    m
}

/// Reads the try identity back from a pod's annotations (adoption).
pub fn task_try_of(pod: &Value) -> Option<TaskTry> {
    let ann = pod.pointer("/metadata/annotations")?;
    let get = |k: &str| {
        ann.get(format!("{ANNOTATION_PREFIX}{k}"))
            .and_then(Value::as_str)
    };
    Some(TaskTry {
        ti_id: get("ti_id")?.parse().ok()?,
        dag_id: get("dag_id")?.to_string(),
        run_id: get("run_id")?.to_string(),
        task_id: get("task_id")?.to_string(),
        map_index: get("map_index")?.parse().ok()?,
        try_number: get("try_number")?.parse().ok()?,
    })
}

/// Builds the pod of `task`: the template, then the executor's fields (`worker_image`, service
/// account) over it, then `pod_override`
/// (see [`merge`]), then the fields that must hold whatever the template and override say:
/// name, namespace, identity labels and annotations, `restartPolicy: Never`, the worker's
/// command and workload.
pub fn build_pod(
    cfg: &PodConfig,
    task: &TaskTry,
    workload_json: &str,
    pod_override: Option<&Value>,
) -> Result<Value, BuildError> {
    if workload_json.len() > MAX_WORKLOAD_BYTES {
        return Err(BuildError::WorkloadTooLarge(workload_json.len()));
    }
    let mut pod = cfg.template.clone().unwrap_or_else(|| json!({}));
    // the executor's own fields win over the template (its image is the one configured)...
    let base = json!({
        "spec": {"containers": [{"name": WORKER_CONTAINER, "image": cfg.worker_image}]}
    });
    merge(&mut pod, &base);
    if let Some(sa) = &cfg.service_account {
        pod["spec"]["serviceAccountName"] = sa.clone().into();
    }
    // ...and the task's override over both
    if let Some(o) = pod_override {
        if !o.is_object() {
            return Err(BuildError::Override("not a mapping".into()));
        }
        merge(&mut pod, o);
    }
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    let meta = obj(&mut pod, "metadata");
    meta.insert("name".into(), pod_name(task).into());
    meta.insert("namespace".into(), cfg.namespace.clone().into());
    meta.remove("generateName");
    let l = obj_in(meta, "labels");
    l.extend(labels(task, &cfg.instance));
    let a = obj_in(meta, "annotations");
    a.extend(annotations(task));
    let spec = obj(&mut pod, "spec");
    spec.insert("restartPolicy".into(), "Never".into());
    let containers = spec
        .entry("containers")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .ok_or_else(|| BuildError::Template("spec.containers is not a list".into()))?;
    let worker = containers
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(WORKER_CONTAINER))
        .expect("the base container is always present");
    let mut command = if cfg.worker_command.is_empty() {
        vec!["updraft".to_string()]
    } else {
        cfg.worker_command.clone()
    };
    command.extend(["task".to_string(), "execute".to_string()]);
    worker["command"] = json!(command);
    if let Some(o) = worker.as_object_mut() {
        o.remove("args");
    }
    let env = worker
        .as_object_mut()
        .expect("a container is a mapping")
        .entry("env")
        .or_insert_with(|| json!([]));
    if !env.is_array() {
        *env = json!([]);
    }
    let env = env.as_array_mut().expect("just made a list");
    env.retain(|e| e.get("name").and_then(Value::as_str) != Some(WORKLOAD_ENV));
    env.push(json!({"name": WORKLOAD_ENV, "value": workload_json}));
    Ok(pod)
}

fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let m = v.as_object_mut().expect("a pod is a mapping");
    obj_in(m, key)
}

fn obj_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let e = m.entry(key).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("just made a mapping")
}

/// Lists merged element by element on the value of a key (strategic-merge style); every other
/// list is replaced.
const MERGE_KEYS: &[(&str, &str)] = &[
    ("containers", "name"),
    ("initContainers", "name"),
    ("ephemeralContainers", "name"),
    ("env", "name"),
    ("volumes", "name"),
    ("volumeMounts", "mountPath"),
    ("ports", "containerPort"),
    ("imagePullSecrets", "name"),
    ("hostAliases", "ip"),
    ("tolerations", "key"),
];

/// Merges `over` into `base`, a subset of Kubernetes' strategic merge patch:
///
/// - mappings merge key by key, recursively; a `null` in `over` removes the key;
/// - lists named in `MERGE_KEYS` (`containers`, `initContainers`, `env`, `volumes`,
///   `imagePullSecrets`, `volumeMounts` by `mountPath`, `ports` by `containerPort`,
///   `tolerations` by `key`, ...) merge element by element: an element of `over` whose key equals
///   one in `base` merges into it (recursively), others are appended in order; elements without
///   the key are appended;
/// - every other value (scalars, other lists such as `command`, `args`) is replaced.
pub fn merge(base: &mut Value, over: &Value) {
    merge_at(base, over, None);
}

fn merge_at(base: &mut Value, over: &Value, list_key: Option<&str>) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, ov) in o {
                if ov.is_null() {
                    b.remove(k);
                    continue;
                }
                let mk = MERGE_KEYS.iter().find(|(n, _)| n == k).map(|(_, key)| *key);
                match b.get_mut(k) {
                    Some(bv) => merge_at(bv, ov, mk),
                    None => {
                        b.insert(k.clone(), ov.clone());
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if list_key.is_some() => {
            let key = list_key.expect("checked");
            for oe in o {
                let id = oe.get(key);
                let found = id.and_then(|id| b.iter_mut().find(|be| be.get(key) == Some(id)));
                match found {
                    Some(be) => merge_at(be, oe, None),
                    None => b.push(oe.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn try_() -> TaskTry {
        TaskTry {
            ti_id: Uuid::parse_str("0190b5a4-0000-7000-8000-000000000001").unwrap(),
            dag_id: "etl".into(),
            run_id: "scheduled__2026-01-01T00:00:00+00:00".into(),
            task_id: "load".into(),
            map_index: -1,
            try_number: 2,
        }
    }

    fn cfg() -> PodConfig {
        PodConfig {
            namespace: "jobs".into(),
            worker_image: "updraft:1".into(),
            instance: "prod".into(),
            ..Default::default()
        }
    }

    fn is_label(v: &str) -> bool {
        v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && (v.is_empty()
                || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
    }

    #[test]
    fn label_values_obey_the_rules_and_stay_distinct() {
        assert_eq!(label_value("load_2"), "load_2");
        let run = label_value("scheduled__2026-01-01T00:00:00+00:00");
        assert!(is_label(&run), "{run}");
        assert!(
            run.starts_with("scheduled__2026-01-01T00_00_00_00_00-"),
            "{run}"
        );
        let long = "a".repeat(100);
        let l = label_value(&long);
        assert_eq!(l.len(), 63);
        assert!(is_label(&l));
        assert_ne!(label_value(&"a".repeat(101)), l);
        assert_ne!(label_value("a:b"), label_value("a/b"));
        assert!(is_label(&label_value("---")));
        assert!(is_label(&label_value("-1")));
        assert!(is_label(&label_value("tâche")));
        assert!(is_label(&label_value(&format!("{}.x", "b".repeat(60)))));
    }

    #[test]
    fn pod_names_are_dns_labels_unique_per_try() {
        let t = try_();
        let n = pod_name(&t);
        assert!(n.starts_with("etl-load-"), "{n}");
        assert!(n.len() <= 63);
        let mut t3 = t.clone();
        t3.try_number = 3;
        assert_ne!(pod_name(&t3), n);
        let mut weird = t.clone();
        weird.dag_id = "My_DAG.With.Dots".repeat(10);
        let w = pod_name(&weird);
        assert!(
            w.len() <= 63 && is_label(&w) && w == w.to_lowercase(),
            "{w}"
        );
    }

    #[test]
    fn builds_a_worker_pod_with_identity_and_workload() {
        let mut c = cfg();
        c.service_account = Some("updraft-worker".into());
        let pod = build_pod(&c, &try_(), r#"{"token":"t"}"#, None).unwrap();
        assert_eq!(pod["kind"], "Pod");
        assert_eq!(pod["metadata"]["namespace"], "jobs");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["serviceAccountName"], "updraft-worker");
        let c0 = &pod["spec"]["containers"][0];
        assert_eq!(c0["name"], WORKER_CONTAINER);
        assert_eq!(c0["image"], "updraft:1");
        assert_eq!(c0["command"], json!(["updraft", "task", "execute"]));
        assert_eq!(
            c0["env"],
            json!([{"name": WORKLOAD_ENV, "value": r#"{"token":"t"}"#}])
        );
        let l = &pod["metadata"]["labels"];
        assert_eq!(l[LABEL_TRY_NUMBER], "2");
        assert_eq!(l[LABEL_MAP_INDEX].as_str().unwrap(), label_value("-1"));
        assert_eq!(l[LABEL_MANAGED_BY], "prod");
        for (_, v) in l.as_object().unwrap() {
            assert!(is_label(v.as_str().unwrap()), "{v}");
        }
        assert_eq!(
            pod["metadata"]["annotations"]["updraft.apache.org/run_id"],
            "scheduled__2026-01-01T00:00:00+00:00"
        );
        assert_eq!(task_try_of(&pod).unwrap(), try_());
    }

    #[test]
    fn template_then_override_merge_by_name() {
        let tpl = PodConfig::parse_template(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: ignored
  labels: {team: data}
spec:
  restartPolicy: Always
  nodeSelector: {pool: batch}
  containers:
    - name: base
      image: template-image
      env: [{name: A, value: "1"}, {name: B, value: "2"}]
      volumeMounts: [{name: logs, mountPath: /logs}]
      resources: {requests: {cpu: 100m, memory: 128Mi}}
    - name: sidecar
      image: proxy
  volumes: [{name: logs, emptyDir: {}}]
"#,
        )
        .unwrap();
        let mut c = cfg();
        c.template = Some(tpl);
        let over: Value = serde_yaml::from_str(
            r#"
spec:
  nodeSelector: null
  containers:
    - name: base
      env: [{name: B, value: "two"}, {name: C, value: "3"}, {name: UPDRAFT_TASK_WORKLOAD, value: x}]
      resources: {requests: {memory: 1Gi}}
    - name: extra
      image: helper
  volumes: [{name: data, persistentVolumeClaim: {claimName: d}}]
"#,
        )
        .unwrap();
        let pod = build_pod(&c, &try_(), "{}", Some(&over)).unwrap();
        let s = &pod["spec"];
        assert_eq!(s["restartPolicy"], "Never");
        assert!(s.get("nodeSelector").is_none());
        assert_ne!(pod["metadata"]["name"], "ignored");
        assert_eq!(pod["metadata"]["labels"]["team"], "data");
        let names: Vec<_> = s["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["base", "sidecar", "extra"]);
        let base = &s["containers"][0];
        assert_eq!(base["image"], "updraft:1");
        assert_eq!(
            base["env"],
            json!([
                {"name": "A", "value": "1"},
                {"name": "B", "value": "two"},
                {"name": "C", "value": "3"},
                {"name": WORKLOAD_ENV, "value": "{}"}
            ])
        );
        assert_eq!(
            base["resources"]["requests"],
            json!({"cpu": "100m", "memory": "1Gi"})
        );
        assert_eq!(s["volumes"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(matches!(
            PodConfig::parse_template("kind: Deployment"),
            Err(BuildError::Template(m)) if m.contains("Deployment")
        ));
        assert!(PodConfig::parse_template("- a").is_err());
        assert!(matches!(
            build_pod(&cfg(), &try_(), "{}", Some(&json!([1]))),
            Err(BuildError::Override(_))
        ));
        let big = "x".repeat(MAX_WORKLOAD_BYTES + 1);
        assert!(matches!(
            build_pod(&cfg(), &try_(), &big, None),
            Err(BuildError::WorkloadTooLarge(_))
        ));
    }
}
