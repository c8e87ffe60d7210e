//! Prints how long rendering one task's fields takes, the work the scheduler does before every
//! dispatch. Run with `cargo run --release -p updraft-template --example render_bench`.

use chrono::{TimeZone, Utc};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;
use updraft_core::{BashSpec, DagSpec, Operator, Schedule, TaskSpec};
use updraft_template::{Lookups, RenderContext, render_bash, resolve_params};

struct Store;

impl Lookups for Store {
    fn variable(&self, _key: &str) -> Option<String> {
        Some("s3://bucket".into())
    }
    fn xcom(&self, _task_id: &str, _key: &str) -> Option<serde_json::Value> {
        Some(json!("/tmp/part-0001.csv"))
    }
}

fn main() {
    let cases = [
        ("plain text", "echo hello"),
        ("ds only", "echo {{ ds }}"),
        (
            "typical",
            "python etl.py --date {{ ds }} --region {{ params.region }} --out {{ var.value.bucket }}/{{ ds_nodash }} --try {{ ti.try_number }}",
        ),
        (
            "xcom + loop",
            "{% for t in ['a', 'b', 'c'] %}cat {{ ti.xcom_pull(task_ids=t) }}; {% endfor %}echo {{ macros.ds_add(ds, -1) }}",
        ),
    ];
    let mut task = TaskSpec::new("t", Operator::Empty);
    task.owner = "airflow".into();
    let dag = DagSpec {
        dag_id: "bench".into(),
        description: None,
        schedule: Schedule::None,
        timezone: "UTC".into(),
        start_date: None,
        end_date: None,
        catchup: false,
        max_active_runs: 16,
        max_active_tasks: 16,
        dagrun_timeout: None,
        params: BTreeMap::new(),
        tags: vec![],
        owner: "airflow".into(),
        doc_md: None,
        is_paused_upon_creation: None,
        tasks: vec![task],
        fileloc: String::new(),
    };
    let conf = json!({"region": "eu"});
    let params = resolve_params(&dag, &conf).expect("params");
    let day = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let ctx = RenderContext {
        dag: &dag,
        task_id: "t",
        run_id: "scheduled__2024-01-01T00:00:00+00:00",
        run_type: "scheduled",
        logical_date: Some(day),
        data_interval_start: Some(day),
        data_interval_end: Some(day),
        run_after: day,
        conf: &conf,
        params: &params,
        try_number: 1,
        map_index: -1,
        start_date: Some(day),
    };
    for (name, text) in cases {
        let mut spec = BashSpec::new(text);
        spec.env = Some(BTreeMap::from([("DS".to_string(), "{{ ds }}".to_string())]));
        let n = 20_000;
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(render_bash(&spec, &ctx, &Store).expect("renders"));
        }
        let per = start.elapsed() / n;
        println!(
            "{name:12} {per:>10.2?} per task ({:.0} tasks/s)",
            1.0 / per.as_secs_f64()
        );
    }
}
