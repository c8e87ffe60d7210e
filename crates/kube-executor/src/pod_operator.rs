//! The pod of a `kubernetes_pod` task try (Airflow's `KubernetesPodOperator`), built from its
//! rendered [`PodOperatorSpec`] (pure: no IO).
//!
//! Unlike a runner pod it runs the user's image with the user's command, and nothing of Updraft
//! (no workload, no token). What it shares with runner pods: the deterministic name of the try
//! ([`pod_name`]), the identity labels (sanitised) and annotations (unabridged), and
//! `restartPolicy: Never`. It is marked with [`LABEL_POD_OPERATOR`] instead of the executor's
//! label, so the Kubernetes executor never adopts or deletes it, and with Airflow's
//! `kubernetes_pod_operator: "True"` label. Identity labels win over the user's labels of the
//! same name.

use crate::pod::{LABEL_MANAGED_BY, WORKER_CONTAINER, annotations, labels, pod_name};
use serde_json::{Map, Value, json};
use updraft_core::PodOperatorSpec;
use updraft_executor::TaskTry;

/// Label marking pods of `kubernetes_pod` tasks; its value is the scheduler's instance name.
pub const LABEL_POD_OPERATOR: &str = "updraft.apache.org/pod-operator";
/// The label Airflow puts on the operator's pods.
pub const LABEL_AIRFLOW_KPO: &str = "kubernetes_pod_operator";

/// The label selector of the pod of one try (identity labels are exact for the ti id and try).
pub fn try_selector(task: &TaskTry, instance: &str) -> String {
    format!(
        "{LABEL_POD_OPERATOR}={},{}={},{}={}",
        crate::pod::label_value(instance),
        crate::pod::LABEL_TI_ID,
        task.ti_id,
        crate::pod::LABEL_TRY_NUMBER,
        task.try_number
    )
}

/// Builds the pod of one try of a pod task, in namespace `namespace`.
pub fn build_operator_pod(
    spec: &PodOperatorSpec,
    task: &TaskTry,
    namespace: &str,
    instance: &str,
) -> Value {
    let mut container = Map::new();
    container.insert("name".into(), WORKER_CONTAINER.into());
    container.insert("image".into(), spec.image.clone().into());
    if !spec.cmds.is_empty() {
        container.insert("command".into(), json!(spec.cmds));
    }
    if !spec.arguments.is_empty() {
        container.insert("args".into(), json!(spec.arguments));
    }
    if !spec.env_vars.is_empty() {
        let env: Vec<Value> = spec
            .env_vars
            .iter()
            .map(|e| match (&e.value, &e.value_from) {
                (_, Some(from)) => json!({"name": e.name, "valueFrom": from}),
                (v, None) => json!({"name": e.name, "value": v.clone().unwrap_or_default()}),
            })
            .collect();
        container.insert("env".into(), env.into());
    }
    if !spec.env_from.is_empty() {
        container.insert("envFrom".into(), json!(spec.env_from));
    }
    if let Some(r) = &spec.resources {
        container.insert("resources".into(), r.clone());
    }
    if !spec.volume_mounts.is_empty() {
        container.insert("volumeMounts".into(), json!(spec.volume_mounts));
    }
    if let Some(p) = &spec.image_pull_policy {
        container.insert("imagePullPolicy".into(), p.clone().into());
    }

    let mut pod_spec = Map::new();
    pod_spec.insert("restartPolicy".into(), "Never".into());
    pod_spec.insert("containers".into(), json!([container]));
    if !spec.volumes.is_empty() {
        pod_spec.insert("volumes".into(), json!(spec.volumes));
    }
    if !spec.node_selector.is_empty() {
        pod_spec.insert("nodeSelector".into(), json!(spec.node_selector));
    }
    if !spec.tolerations.is_empty() {
        pod_spec.insert("tolerations".into(), json!(spec.tolerations));
    }
    if let Some(a) = &spec.affinity {
        pod_spec.insert("affinity".into(), a.clone());
    }
    if let Some(sa) = &spec.service_account_name {
        pod_spec.insert("serviceAccountName".into(), sa.clone().into());
    }
    if !spec.image_pull_secrets.is_empty() {
        let secrets: Vec<Value> = spec
            .image_pull_secrets
            .iter()
            .map(|s| json!({"name": s}))
            .collect();
        pod_spec.insert("imagePullSecrets".into(), secrets.into());
    }

    let mut l: Map<String, Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    let mut identity = labels(task, instance);
    identity.remove(LABEL_MANAGED_BY);
    l.extend(identity);
    l.insert(
        LABEL_POD_OPERATOR.into(),
        crate::pod::label_value(instance).into(),
    );
    l.insert(LABEL_AIRFLOW_KPO.into(), "True".into());
    let mut a: Map<String, Value> = spec
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    a.extend(annotations(task));

    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(task),
            "namespace": namespace,
            "labels": l,
            "annotations": a,
        },
        "spec": pod_spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{LABEL_TASK_ID, LABEL_TI_ID, LABEL_TRY_NUMBER, task_try_of};
    use updraft_core::{OnFinishAction, PodEnvVar};
    use uuid::Uuid;

    fn try_() -> TaskTry {
        TaskTry {
            ti_id: Uuid::parse_str("0190b5a4-0000-7000-8000-000000000002").unwrap(),
            dag_id: "etl".into(),
            run_id: "manual__2026-01-01T00:00:00+00:00".into(),
            task_id: "transform".into(),
            map_index: -1,
            try_number: 1,
        }
    }

    #[test]
    fn minimal_pod_runs_the_image_as_is() {
        let pod = build_operator_pod(&PodOperatorSpec::new("busybox"), &try_(), "jobs", "prod");
        assert_eq!(pod["metadata"]["name"], pod_name(&try_()));
        assert_eq!(pod["metadata"]["namespace"], "jobs");
        assert_eq!(
            pod["spec"],
            json!({"restartPolicy": "Never",
                   "containers": [{"name": "base", "image": "busybox"}]})
        );
        let l = &pod["metadata"]["labels"];
        assert_eq!(l[LABEL_POD_OPERATOR], "prod");
        assert_eq!(l[LABEL_AIRFLOW_KPO], "True");
        assert_eq!(l[LABEL_TASK_ID], "transform");
        assert_eq!(l[LABEL_TRY_NUMBER], "1");
        assert_eq!(l[LABEL_TI_ID], try_().ti_id.to_string());
        // never the executor's label: the Kubernetes executor must not adopt or delete it
        assert!(l.get(LABEL_MANAGED_BY).is_none());
        assert_eq!(task_try_of(&pod).unwrap(), try_());
    }

    #[test]
    fn every_field_lands_where_kubernetes_expects_it() {
        let mut s = PodOperatorSpec::new("registry.example.com/etl:1.4");
        s.cmds = vec!["python".into(), "-m".into(), "etl".into()];
        s.arguments = vec!["--date".into(), "2026-01-01".into()];
        s.env_vars = vec![
            PodEnvVar {
                name: "STAGE".into(),
                value: Some("prod".into()),
                value_from: None,
            },
            PodEnvVar {
                name: "TOKEN".into(),
                value: None,
                value_from: Some(json!({"secretKeyRef": {"name": "api", "key": "t"}})),
            },
        ];
        s.env_from = vec![json!({"configMapRef": {"name": "cfg"}})];
        s.resources = Some(json!({"limits": {"memory": "1Gi"}}));
        s.volumes = vec![json!({"name": "scratch", "emptyDir": {}})];
        s.volume_mounts = vec![json!({"name": "scratch", "mountPath": "/scratch"})];
        s.node_selector.insert("pool".into(), "batch".into());
        s.tolerations = vec![json!({"key": "dedicated", "operator": "Exists"})];
        s.affinity = Some(json!({"nodeAffinity": {}}));
        s.service_account_name = Some("etl".into());
        s.labels.insert("team".into(), "data".into());
        // a user label cannot forge the try's identity
        s.labels.insert(LABEL_TASK_ID.into(), "other".into());
        s.annotations
            .insert("owner".into(), "me@example.com".into());
        s.image_pull_secrets = vec!["regcred".into()];
        s.image_pull_policy = Some("Always".into());
        s.on_finish_action = OnFinishAction::KeepPod;
        s.namespace = Some("ignored-here".into());
        let pod = build_operator_pod(&s, &try_(), "jobs", "prod");
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["name"], "base");
        assert_eq!(c["command"], json!(["python", "-m", "etl"]));
        assert_eq!(c["args"], json!(["--date", "2026-01-01"]));
        assert_eq!(
            c["env"],
            json!([{"name": "STAGE", "value": "prod"},
                   {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "t"}}}])
        );
        assert_eq!(c["envFrom"], json!([{"configMapRef": {"name": "cfg"}}]));
        assert_eq!(c["resources"], json!({"limits": {"memory": "1Gi"}}));
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "scratch", "mountPath": "/scratch"}])
        );
        assert_eq!(c["imagePullPolicy"], "Always");
        let p = &pod["spec"];
        assert_eq!(p["restartPolicy"], "Never");
        assert_eq!(p["volumes"], json!([{"name": "scratch", "emptyDir": {}}]));
        assert_eq!(p["nodeSelector"], json!({"pool": "batch"}));
        assert_eq!(p["tolerations"][0]["key"], "dedicated");
        assert_eq!(p["affinity"], json!({"nodeAffinity": {}}));
        assert_eq!(p["serviceAccountName"], "etl");
        assert_eq!(p["imagePullSecrets"], json!([{"name": "regcred"}]));
        assert_eq!(pod["metadata"]["namespace"], "jobs");
        assert_eq!(pod["metadata"]["labels"]["team"], "data");
        assert_eq!(pod["metadata"]["labels"][LABEL_TASK_ID], "transform");
        assert_eq!(pod["metadata"]["annotations"]["owner"], "me@example.com");
        // deterministic
        assert_eq!(pod, build_operator_pod(&s, &try_(), "jobs", "prod"));
    }

    #[test]
    fn the_selector_finds_only_this_try() {
        let t = try_();
        let sel = try_selector(&t, "prod");
        assert!(sel.contains(&format!("{LABEL_TI_ID}={}", t.ti_id)));
        assert!(sel.contains(&format!("{LABEL_TRY_NUMBER}=1")));
        assert!(sel.starts_with(&format!("{LABEL_POD_OPERATOR}=prod,")));
    }
}
