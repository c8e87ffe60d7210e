//! Rendering against Airflow 3's behaviour. Expected strings come from Airflow's
//! `task-sdk/src/airflow/sdk/execution_time/task_runner.py::get_template_context` (the context
//! keys and their formats), `templates-ref.rst` (e.g. `ts` = `2018-01-01T00:00:00+00:00`,
//! `ts_nodash_with_tz` = `20180101T000000+0000`), `task-sdk/.../macros.py` (`ds_add`,
//! `ds_format` doctests), and pendulum 3's `DateTime.__str__` (`isoformat(" ")`), which is how
//! Jinja prints `{{ logical_date }}` under Airflow 3 (the SDK requires `pendulum>=3.1`).

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use updraft_core::{BashSpec, DagSpec, Operator, ParamSpec, Schedule, TaskSpec};
use updraft_template::{
    Error, Lookups, Needs, NoLookups, ParamsError, RenderContext, needs, render_bash, render_str,
    resolve_params,
};

fn dag() -> DagSpec {
    let mut extract = TaskSpec::new("extract", Operator::Bash(BashSpec::new("echo {{ ds }}")));
    extract.owner = "data-eng".into();
    let mut load = TaskSpec::new("load", Operator::Bash(BashSpec::new("echo load")));
    load.upstream = vec!["extract".into()];
    load.retries = 3;
    load.owner = "ops".into();
    load.queue = "heavy".into();
    let mut params = BTreeMap::new();
    params.insert(
        "region".to_string(),
        ParamSpec {
            default: Some(json!("eu")),
            description: None,
            schema: json!({"type": "string", "enum": ["eu", "us"]})
                .as_object()
                .unwrap()
                .clone(),
        },
    );
    DagSpec {
        dag_id: "etl".into(),
        description: Some("daily etl".into()),
        schedule: Schedule::Cron {
            expr: "0 0 * * *".into(),
            data_interval: true,
        },
        timezone: "UTC".into(),
        start_date: Some(Utc.with_ymd_and_hms(2023, 1, 1, 0, 0, 0).unwrap()),
        end_date: None,
        catchup: false,
        max_active_runs: 16,
        max_active_tasks: 16,
        dagrun_timeout: Some(Duration::from_secs(3600)),
        params,
        tags: vec!["finance".into(), "daily".into()],
        owner: "data-eng".into(),
        doc_md: None,
        is_paused_upon_creation: None,
        tasks: vec![extract, load],
        fileloc: "etl.yaml".into(),
    }
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

struct Fixture {
    dag: DagSpec,
    conf: Value,
    params: Map<String, Value>,
}

impl Fixture {
    fn new() -> Self {
        let dag = dag();
        let conf = json!({"region": "us", "limit": 5, "nested": {"k": [1, 2]}});
        let params = resolve_params(&dag, &conf).unwrap();
        Fixture { dag, conf, params }
    }

    /// A scheduled run for 2024-01-01 with a one-day data interval, task `load`, second try.
    fn ctx(&self) -> RenderContext<'_> {
        RenderContext {
            dag: &self.dag,
            task_id: "load",
            run_id: "scheduled__2024-01-01T00:00:00+00:00",
            run_type: "scheduled",
            logical_date: Some(at(2024, 1, 1, 0, 0, 0)),
            data_interval_start: Some(at(2024, 1, 1, 0, 0, 0)),
            data_interval_end: Some(at(2024, 1, 2, 0, 0, 0)),
            run_after: at(2024, 1, 2, 0, 0, 0),
            conf: &self.conf,
            params: &self.params,
            try_number: 2,
            map_index: -1,
            start_date: Some(at(2024, 1, 2, 0, 0, 5)),
        }
    }

    /// A manual run triggered with `logical_date=None`.
    fn ctx_no_date(&self) -> RenderContext<'_> {
        RenderContext {
            run_id: "manual__2024-03-05T10:00:00+00:00",
            run_type: "manual",
            logical_date: None,
            data_interval_start: None,
            data_interval_end: None,
            run_after: at(2024, 3, 5, 10, 0, 0),
            ..self.ctx()
        }
    }
}

#[derive(Default)]
struct Store {
    vars: HashMap<String, String>,
    xcoms: HashMap<(String, String), Value>,
    asked: RefCell<Vec<String>>,
}

impl Lookups for Store {
    fn variable(&self, key: &str) -> Option<String> {
        self.asked.borrow_mut().push(format!("var:{key}"));
        self.vars.get(key).cloned()
    }
    fn xcom(&self, task_id: &str, key: &str) -> Option<Value> {
        self.asked
            .borrow_mut()
            .push(format!("xcom:{task_id}:{key}"));
        self.xcoms
            .get(&(task_id.to_string(), key.to_string()))
            .cloned()
    }
}

fn store() -> Store {
    let mut s = Store::default();
    s.vars.insert("bucket".into(), "s3://data".into());
    s.vars.insert(
        "cfg".into(),
        r#"{"db": {"host": "pg"}, "ports": [1, 2]}"#.into(),
    );
    s.vars.insert("broken".into(), "{not json".into());
    s.xcoms.insert(
        ("extract".into(), "return_value".into()),
        json!("/tmp/out.csv"),
    );
    s.xcoms.insert(("extract".into(), "rows".into()), json!(42));
    s.xcoms
        .insert(("load".into(), "return_value".into()), json!({"ok": true}));
    s
}

fn r(f: &Fixture, t: &str) -> String {
    render_str(t, &f.ctx(), &store()).unwrap_or_else(|e| panic!("{t}: {e}"))
}

fn err(ctx: &RenderContext, t: &str) -> Error {
    render_str(t, ctx, &store()).expect_err(t)
}

#[test]
fn logical_date_keys_render_like_airflow() {
    let f = Fixture::new();
    let cases = [
        ("{{ ds }}", "2024-01-01"),
        ("{{ ds_nodash }}", "20240101"),
        ("{{ ts }}", "2024-01-01T00:00:00+00:00"),
        ("{{ ts_nodash }}", "20240101T000000"),
        ("{{ ts_nodash_with_tz }}", "20240101T000000+0000"),
        ("{{ logical_date }}", "2024-01-01 00:00:00+00:00"),
        ("{{ data_interval_start }}", "2024-01-01 00:00:00+00:00"),
        ("{{ data_interval_end }}", "2024-01-02 00:00:00+00:00"),
        ("{{ task_instance_key_str }}", "etl__load__20240101"),
        ("{{ run_id }}", "scheduled__2024-01-01T00:00:00+00:00"),
    ];
    for (t, want) in cases {
        assert_eq!(r(&f, t), want, "{t}");
    }
}

#[test]
fn dates_are_objects() {
    let f = Fixture::new();
    assert_eq!(
        r(&f, "{{ logical_date.year }}-{{ logical_date.month }}"),
        "2024-1"
    );
    assert_eq!(
        r(&f, "{{ logical_date.strftime('%Y/%m/%d %H%M') }}"),
        "2024/01/01 0000"
    );
    assert_eq!(
        r(&f, "{{ data_interval_end.isoformat() }}"),
        "2024-01-02T00:00:00+00:00"
    );
    assert_eq!(r(&f, "{{ logical_date.add(days=1) | ds }}"), "2024-01-02");
    assert_eq!(
        r(&f, "{{ logical_date.subtract(months=1) | ds }}"),
        "2023-12-01"
    );
    assert_eq!(
        r(&f, "{{ logical_date.in_timezone('Europe/Amsterdam') }}"),
        "2024-01-01 01:00:00+01:00"
    );
    assert_eq!(r(&f, "{{ logical_date.int_timestamp }}"), "1704067200");
    assert_eq!(
        r(
            &f,
            "{{ 'yes' if data_interval_start < data_interval_end else 'no' }}"
        ),
        "yes"
    );
    let e = err(&f.ctx(), "{{ logical_date.in_timezone('Mars/Base') }}");
    assert!(
        e.to_string().contains("unknown timezone `Mars/Base`"),
        "{e}"
    );
}

#[test]
fn microseconds_render_like_python() {
    let f = Fixture::new();
    let ld = Utc.timestamp_opt(1_704_067_200, 123_456_000).unwrap();
    let ctx = RenderContext {
        logical_date: Some(ld),
        ..f.ctx()
    };
    let out = render_str(
        "{{ logical_date }}|{{ ts }}|{{ ts_nodash }}|{{ ts_nodash_with_tz }}",
        &ctx,
        &NoLookups,
    )
    .unwrap();
    assert_eq!(
        out,
        "2024-01-01 00:00:00.123456+00:00|2024-01-01T00:00:00.123456+00:00|20240101T000000|20240101T000000.123456+0000"
    );
}

#[test]
fn filters() {
    let f = Fixture::new();
    assert_eq!(r(&f, "{{ data_interval_end | ds }}"), "2024-01-02");
    assert_eq!(r(&f, "{{ data_interval_end | ds_nodash }}"), "20240102");
    assert_eq!(
        r(&f, "{{ data_interval_end | ts }}"),
        "2024-01-02T00:00:00+00:00"
    );
    assert_eq!(
        r(&f, "{{ data_interval_end | ts_nodash }}"),
        "20240102T000000"
    );
    assert_eq!(
        r(&f, "{{ data_interval_end | ts_nodash_with_tz }}"),
        "20240102T000000+0000"
    );
    // Dates from conf arrive as strings.
    assert_eq!(
        r(&f, "{{ '2024-05-06T07:08:09Z' | ds_nodash }}"),
        "20240506"
    );
    let e = err(&f.ctx(), "{{ 42 | ds }}");
    assert!(
        e.to_string().contains("filter `ds` needs a date, got 42"),
        "{e}"
    );
}

#[test]
fn run_task_and_dag_objects() {
    let f = Fixture::new();
    let cases = [
        (
            "{{ dag_run.run_id }}",
            "scheduled__2024-01-01T00:00:00+00:00",
        ),
        ("{{ dag_run.run_type }}", "scheduled"),
        ("{{ dag_run.logical_date }}", "2024-01-01 00:00:00+00:00"),
        ("{{ dag_run.start_date }}", "2024-01-02 00:00:05+00:00"),
        ("{{ dag_run.data_interval_start | ds }}", "2024-01-01"),
        ("{{ dag_run.run_after }}", "2024-01-02 00:00:00+00:00"),
        ("{{ dag_run.dag_id }}", "etl"),
        ("{{ dag_run.conf.limit }}", "5"),
        ("{{ dag_run.conf['nested'].k[1] }}", "2"),
        ("{{ dag_run.conf.get('missing', 'dflt') }}", "dflt"),
        (
            "{{ dag_run.conf }}",
            "{'limit': 5, 'nested': {'k': [1, 2]}, 'region': 'us'}",
        ),
        ("{{ ti.try_number }}", "2"),
        (
            "{{ ti.task_id }}/{{ ti.dag_id }}/{{ ti.run_id }}",
            "load/etl/scheduled__2024-01-01T00:00:00+00:00",
        ),
        ("{{ ti.map_index }}", "-1"),
        ("{{ task_instance.try_number }}", "2"),
        (
            "{{ ti }}",
            "<TaskInstance: etl.load scheduled__2024-01-01T00:00:00+00:00 [running]>",
        ),
        (
            "{{ task.task_id }} {{ task.owner }} {{ task.retries }} {{ task.queue }}",
            "load ops 3 heavy",
        ),
        ("{{ task.retry_delay }}", "0:05:00"),
        ("{{ task.execution_timeout }}", "None"),
        ("{{ task.upstream_task_ids }}", "['extract']"),
        ("{{ task }}", "<Task(BashOperator): load>"),
        ("{{ dag.dag_id }}", "etl"),
        ("{{ dag.tags }}", "['finance', 'daily']"),
        ("{{ dag.tags | join(',') }}", "finance,daily"),
        ("{{ dag.owner }}", "data-eng, ops"),
        ("{{ dag.description }}", "daily etl"),
        ("{{ dag }}", "<DAG: etl>"),
        ("{{ dag.dagrun_timeout }}", "1:00:00"),
    ];
    for (t, want) in cases {
        assert_eq!(r(&f, t), want, "{t}");
    }
}

#[test]
fn params_dot_and_bracket_access() {
    let f = Fixture::new();
    assert_eq!(r(&f, "{{ params.region }}"), "us");
    assert_eq!(r(&f, "{{ params['region'] }}"), "us");
    // A conf key that is not a declared param is still a param (Airflow's ParamsDict.update).
    assert_eq!(r(&f, "{{ params.limit + 1 }}"), "6");
    assert_eq!(r(&f, "{{ params.get('nope', 'd') }}"), "d");
    assert_eq!(r(&f, "{{ params.nested }}"), "{'k': [1, 2]}");
    assert_eq!(r(&f, "{{ params.nested | tojson }}"), r#"{"k":[1,2]}"#);
}

#[test]
fn python_like_values() {
    let f = Fixture::new();
    assert_eq!(
        r(
            &f,
            "{{ none }}|{{ true }}|{{ false }}|{{ 1.0 }}|{{ 7 / 2 }}"
        ),
        "None|True|False|1.0|3.5"
    );
    assert_eq!(r(&f, "{{ ['a', 1, none] }}"), "['a', 1, None]");
    assert_eq!(r(&f, "{{ ds.replace('-', '/') }}"), "2024/01/01");
    assert_eq!(r(&f, "{{ 'a,b'.split(',') }}"), "['a', 'b']");
    assert_eq!(
        r(&f, "{{ run_id.upper() }}"),
        "SCHEDULED__2024-01-01T00:00:00+00:00"
    );
}

#[test]
fn no_logical_date_run() {
    let f = Fixture::new();
    let ctx = f.ctx_no_date();
    assert_eq!(
        render_str("{{ task_instance_key_str }}", &ctx, &NoLookups).unwrap(),
        "etl__load__manual__2024-03-05T10:00:00+00:00"
    );
    assert_eq!(
        render_str(
            "{{ dag_run.logical_date }}|{{ dag_run.run_type }}",
            &ctx,
            &NoLookups
        )
        .unwrap(),
        "None|manual"
    );
    assert_eq!(
        render_str("{{ ds if ds is defined else run_id }}", &ctx, &NoLookups).unwrap(),
        "manual__2024-03-05T10:00:00+00:00"
    );
    for key in [
        "ds",
        "ds_nodash",
        "ts",
        "ts_nodash",
        "ts_nodash_with_tz",
        "logical_date",
        "data_interval_start",
        "data_interval_end",
    ] {
        let e = err(&ctx, &format!("x {{{{ {key} }}}}"));
        assert_eq!(
            e,
            Error::Undefined {
                field: "template".into(),
                name: Some(key.into()),
                line: Some(1)
            },
            "{key}"
        );
    }
    let e = err(&ctx, "{{ data_interval_start | ds }}");
    assert_eq!(
        e.to_string(),
        "cannot render `template` at line 1: `data_interval_start` is undefined"
    );
}

#[test]
fn xcom_pull() {
    let f = Fixture::new();
    assert_eq!(
        r(&f, "{{ ti.xcom_pull(task_ids='extract') }}"),
        "/tmp/out.csv"
    );
    assert_eq!(r(&f, "{{ ti.xcom_pull('extract') }}"), "/tmp/out.csv");
    assert_eq!(
        r(&f, "{{ ti.xcom_pull(task_ids='extract', key='rows') + 1 }}"),
        "43"
    );
    assert_eq!(
        r(
            &f,
            "{{ ti.xcom_pull(task_ids=['extract', 'nothing', 'load']) }}"
        ),
        "['/tmp/out.csv', None, {'ok': True}]"
    );
    assert_eq!(r(&f, "{{ ti.xcom_pull(task_ids='nothing') }}"), "None");
    // No task_ids: the task's own XCom.
    assert_eq!(r(&f, "{{ ti.xcom_pull() }}"), "{'ok': True}");
    assert_eq!(
        r(&f, "{{ task_instance.xcom_pull(task_ids='load').ok }}"),
        "True"
    );
    // `default` applies only with explicit map_indexes, as in Airflow.
    assert_eq!(
        r(
            &f,
            "{{ ti.xcom_pull(task_ids='nothing', map_indexes=-1, default='d') }}"
        ),
        "d"
    );
    assert_eq!(
        r(&f, "{{ ti.xcom_pull(task_ids='nothing', default='d') }}"),
        "None"
    );
    let e = err(
        &f.ctx(),
        "{{ ti.xcom_pull(task_ids='extract', dag_id='other') }}",
    );
    assert!(e.to_string().contains("another dag (`other`)"), "{e}");
    let e = err(
        &f.ctx(),
        "{{ ti.xcom_pull(task_ids='extract', map_indexes=[0, 1]) }}",
    );
    assert!(
        e.to_string()
            .contains("map_indexes=[0, 1] is not supported"),
        "{e}"
    );
    let e = err(&f.ctx(), "{{ ti.xcom_pull(task_ids='extract', bogus=1) }}");
    assert!(e.to_string().contains("bogus"), "{e}");
}

#[test]
fn variables() {
    let f = Fixture::new();
    assert_eq!(
        r(&f, "{{ var.value.bucket }}/{{ ds }}"),
        "s3://data/2024-01-01"
    );
    assert_eq!(r(&f, "{{ var.value['bucket'] }}"), "s3://data");
    assert_eq!(
        r(&f, "{{ var.json.cfg.db.host }}:{{ var.json.cfg.ports[1] }}"),
        "pg:2"
    );
    assert_eq!(r(&f, "{{ var.value.get('nope', 'fallback') }}"), "fallback");
    assert_eq!(r(&f, "{{ var.value.get('nope', default='kw') }}"), "kw");
    assert_eq!(r(&f, "{{ var.value.get('nope') }}"), "None");
    assert_eq!(r(&f, "{{ var.value.get('bucket', 'x') }}"), "s3://data");
    assert_eq!(r(&f, "{{ var.json.get('cfg').db }}"), "{'host': 'pg'}");
    let e = err(&f.ctx(), "{{ var.value.nope }}");
    assert_eq!(
        e.to_string(),
        "cannot render `template` at line 1: variable `nope` does not exist"
    );
    let e = err(&f.ctx(), "{{ var.json.broken }}");
    assert!(
        e.to_string()
            .contains("variable `broken` is not valid JSON"),
        "{e}"
    );
    let e = err(&f.ctx(), "{{ var.json.get('broken', 1) }}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
}

#[test]
fn lookups_are_lazy() {
    let f = Fixture::new();
    let s = store();
    render_str(
        "{{ ds }} {% if false %}{{ var.value.bucket }}{% endif %}",
        &f.ctx(),
        &s,
    )
    .unwrap();
    assert!(s.asked.borrow().is_empty());
    render_str(
        "{{ var.value.bucket }}{{ ti.xcom_pull('extract', key='rows') }}",
        &f.ctx(),
        &s,
    )
    .unwrap();
    assert_eq!(*s.asked.borrow(), ["var:bucket", "xcom:extract:rows"]);
}

#[test]
fn macros() {
    let f = Fixture::new();
    // The doctests of Airflow's macros.py.
    assert_eq!(r(&f, "{{ macros.ds_add('2015-01-01', 5) }}"), "2015-01-06");
    assert_eq!(r(&f, "{{ macros.ds_add('2015-01-06', -5) }}"), "2015-01-01");
    assert_eq!(
        r(
            &f,
            "{{ macros.ds_format('2015-01-01', '%Y-%m-%d', '%m-%d-%y') }}"
        ),
        "01-01-15"
    );
    assert_eq!(
        r(
            &f,
            "{{ macros.ds_format('1/5/2015', '%m/%d/%Y', '%Y-%m-%d') }}"
        ),
        "2015-01-05"
    );
    assert_eq!(
        r(
            &f,
            "{{ macros.ds_format('12/07/2024', '%d/%m/%Y', '%A %d %B %Y') }}"
        ),
        "Friday 12 July 2024"
    );
    assert_eq!(r(&f, "{{ macros.ds_add(ds, 7) }}"), "2024-01-08");
    assert_eq!(r(&f, "{{ macros.ds_add(ds, 0) }}"), "2024-01-01");
    let e = err(&f.ctx(), "{{ macros.ds_add('01/02/2024', 1) }}");
    assert!(
        e.to_string().contains("does not match format `%Y-%m-%d`"),
        "{e}"
    );
    let e = err(&f.ctx(), "{{ macros.ds_format(ds, '%Y-%m-%d', '%Q') }}");
    assert!(e.to_string().contains("unsupported directive `%Q`"), "{e}");
}

#[test]
fn strict_undefined_names_the_culprit() {
    let f = Fixture::new();
    let ctx = f.ctx();
    let e = err(&ctx, "echo {{ nope }}");
    assert_eq!(
        e.to_string(),
        "cannot render `template` at line 1: `nope` is undefined"
    );
    let e = err(&ctx, "line one\necho {{ ds }} {{ params.missing }}");
    assert_eq!(
        e,
        Error::Undefined {
            field: "template".into(),
            name: Some("params.missing".into()),
            line: Some(2)
        }
    );
    let e = err(&ctx, "{{ dag_run.conf.nested.nope }}");
    assert_eq!(
        e.to_string(),
        "cannot render `template` at line 1: `dag_run.conf.nested.nope` is undefined"
    );
    let e = err(&ctx, "{% if undefined_flag %}x{% endif %}");
    assert!(matches!(e, Error::Undefined { .. }), "{e}");
    let e = err(&ctx, "{{ params['nope'] }}");
    assert_eq!(
        e.to_string(),
        "cannot render `template` at line 1: `params['nope']` is undefined"
    );
    // Removed in Airflow 3.
    for old in [
        "execution_date",
        "next_ds",
        "prev_ds",
        "tomorrow_ds",
        "conf",
    ] {
        let e = err(&ctx, &format!("{{{{ {old} }}}}"));
        assert!(e.to_string().contains(&format!("`{old}`")), "{e}");
    }
    // `is defined` and `default` still work as in Jinja2's StrictUndefined.
    assert_eq!(r(&f, "{{ params.missing is defined }}"), "False");
    assert_eq!(r(&f, "{{ params.missing | default('x') }}"), "x");
}

#[test]
fn syntax_errors_carry_the_line() {
    let f = Fixture::new();
    let e = err(&f.ctx(), "echo start\necho {{ ds }\n");
    let Error::Syntax {
        field,
        line,
        message,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((field.as_str(), *line), ("template", Some(2)));
    assert!(!message.is_empty());
    assert!(
        e.to_string()
            .starts_with("cannot render `template` at line 2: syntax error: "),
        "{e}"
    );
    let e = err(&f.ctx(), "{% if x %}\nnever closed");
    assert!(matches!(e, Error::Syntax { .. }), "{e}");
}

#[test]
fn render_bash_renders_command_and_env_values() {
    let f = Fixture::new();
    let mut spec =
        BashSpec::new("echo {{ params.region }} {{ ti.xcom_pull(task_ids='extract') }}\n");
    spec.env = Some(BTreeMap::from([
        ("DS".to_string(), "{{ ds }}".to_string()),
        ("{{ not_a_template_key }}".to_string(), "plain".to_string()),
        ("BUCKET".to_string(), "{{ var.value.bucket }}".to_string()),
    ]));
    let out = render_bash(&spec, &f.ctx(), &store()).unwrap();
    assert_eq!(out.bash_command, "echo us /tmp/out.csv");
    assert_eq!(
        out.env.unwrap(),
        BTreeMap::from([
            ("DS".to_string(), "2024-01-01".to_string()),
            ("{{ not_a_template_key }}".to_string(), "plain".to_string()),
            ("BUCKET".to_string(), "s3://data".to_string()),
        ])
    );

    let plain = BashSpec::new("echo hi");
    assert_eq!(
        render_bash(&plain, &f.ctx(), &NoLookups).unwrap(),
        updraft_template::RenderedBash {
            bash_command: "echo hi".into(),
            env: None
        }
    );

    spec.env = Some(BTreeMap::from([(
        "BAD".to_string(),
        "{{ nope }}".to_string(),
    )]));
    let e = render_bash(&spec, &f.ctx(), &store()).unwrap_err();
    assert_eq!(e.field(), "env.BAD");
    assert_eq!(
        e.to_string(),
        "cannot render `env.BAD` at line 1: `nope` is undefined"
    );

    let bad = BashSpec::new("echo {{ ds ");
    let e = render_bash(&bad, &f.ctx(), &NoLookups).unwrap_err();
    assert_eq!(e.field(), "bash_command");
}

#[test]
fn plain_text_fast_path_matches_jinja() {
    let f = Fixture::new();
    for t in ["echo hi\n", "echo hi\r\n", "a\n\n", "x", "", "tab\there"] {
        let fast = render_str(t, &f.ctx(), &NoLookups).unwrap();
        // Same text through the engine: a no-op tag at the start forces full rendering.
        let slow = render_str(&format!("{{{{ '' }}}}{t}"), &f.ctx(), &NoLookups).unwrap();
        assert_eq!(fast, slow, "{t:?}");
    }
}

#[test]
fn needs_detects_store_access() {
    assert_eq!(
        needs(&["echo {{ ds }}", "plain var.value.x"]),
        Needs::default()
    );
    assert_eq!(
        needs(&["{{ var.value.x }}"]),
        Needs {
            variables: true,
            xcoms: false
        }
    );
    assert_eq!(
        needs(&["a", "{{ ti.xcom_pull('t') }}"]),
        Needs {
            variables: false,
            xcoms: true
        }
    );
    assert!(needs(&["{{ var['value'] }}"]).variables);
    assert!(!needs(&["{{ variance }}"]).variables);
}

fn param(default: Option<Value>, schema: Value) -> ParamSpec {
    ParamSpec {
        default,
        description: None,
        schema: schema.as_object().cloned().unwrap_or_default(),
    }
}

fn dag_with(params: Vec<(&str, ParamSpec)>) -> DagSpec {
    let mut d = dag();
    d.params = params
        .into_iter()
        .map(|(k, p)| (k.to_string(), p))
        .collect();
    d
}

#[test]
fn resolve_params_defaults_conf_and_validation() {
    let d = dag_with(vec![
        (
            "n",
            param(Some(json!(10)), json!({"type": "integer", "minimum": 1})),
        ),
        ("name", param(Some(json!("x")), json!({}))),
        ("opt", param(None, json!({"type": ["null", "string"]}))),
    ]);
    // Defaults.
    assert_eq!(
        Value::Object(resolve_params(&d, &Value::Null).unwrap()),
        json!({"n": 10, "name": "x", "opt": null})
    );
    // Conf overrides matching params and adds the rest.
    assert_eq!(
        Value::Object(resolve_params(&d, &json!({"n": 3, "extra": [1]})).unwrap()),
        json!({"n": 3, "name": "x", "opt": null, "extra": [1]})
    );
    // Validation names param, value and rule.
    let e = resolve_params(&d, &json!({"n": 0})).unwrap_err();
    assert_eq!(
        e,
        ParamsError::Invalid {
            param: "n".into(),
            value: "0".into(),
            rule: "must be >= 1 (minimum)".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "param `n` has invalid value 0: must be >= 1 (minimum)"
    );
    let e = resolve_params(&d, &json!({"n": "five"})).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"param `n` has invalid value "five": must be of type integer, got string"#
    );
    // The defaults themselves are validated too.
    let d2 = dag_with(vec![("n", param(Some(json!(0)), json!({"minimum": 1})))]);
    assert!(matches!(
        resolve_params(&d2, &Value::Null),
        Err(ParamsError::Invalid { .. })
    ));
    // Conf must be an object.
    assert_eq!(
        resolve_params(&d, &json!([1])).unwrap_err().to_string(),
        "dag run conf must be a JSON object, got [1]"
    );
}

#[test]
fn resolve_params_required_without_default() {
    let d = dag_with(vec![(
        "date",
        param(None, json!({"type": "string", "format": "date"})),
    )]);
    let e = resolve_params(&d, &json!({})).unwrap_err();
    assert_eq!(
        e,
        ParamsError::Missing {
            param: "date".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "param `date` is required: it has no default and the run's conf does not set it"
    );
    assert_eq!(
        resolve_params(&d, &json!({"date": "2024-02-01"})).unwrap()["date"],
        json!("2024-02-01")
    );
    let e = resolve_params(&d, &json!({"date": "yesterday"})).unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"param `date` has invalid value "yesterday": must be a valid date (format)"#
    );
    // An explicit null from conf is a value and is validated.
    let e = resolve_params(&d, &json!({"date": null})).unwrap_err();
    assert!(
        e.to_string().contains("must be of type string, got null"),
        "{e}"
    );
}

#[test]
fn renders_are_independent_and_reentrant_safe() {
    // Two contexts on the same thread, interleaved: each render sees its own run.
    let f = Fixture::new();
    let a = f.ctx();
    let b = f.ctx_no_date();
    for _ in 0..3 {
        assert_eq!(
            render_str("{{ run_id }}", &a, &NoLookups).unwrap(),
            a.run_id
        );
        assert_eq!(
            render_str("{{ run_id }}", &b, &NoLookups).unwrap(),
            b.run_id
        );
    }
    // And from other threads.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let f = Fixture::new();
                let mut ctx = f.ctx();
                ctx.try_number = i;
                render_str("{{ ti.try_number }}", &ctx, &NoLookups).unwrap()
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), i.to_string());
    }
}

#[test]
fn pod_task_fields_render_like_bash_ones() {
    use updraft_core::{PodEnvVar, PodOperatorSpec};
    let f = Fixture::new();
    let mut spec = PodOperatorSpec::new("python:3.12-slim");
    spec.cmds = vec!["python".into(), "-c".into()];
    spec.arguments = vec!["print('{{ ds }}')".into(), "{{ var.value.bucket }}".into()];
    spec.env_vars = vec![
        PodEnvVar {
            name: "RUN".into(),
            value: Some("{{ run_id }}/{{ ti.try_number }}".into()),
            value_from: None,
        },
        PodEnvVar {
            name: "TOKEN".into(),
            value: None,
            value_from: Some(json!({"secretKeyRef": {"name": "s", "key": "{{ ds }}"}})),
        },
    ];
    spec.labels.insert("team".into(), "{{ ds }}".into());
    let s = store();
    let out = updraft_template::render_pod(&spec, &f.ctx(), &s).unwrap();
    assert_eq!(out.cmds, ["python", "-c"]);
    assert_eq!(out.arguments, ["print('2024-01-01')", "s3://data"]);
    assert_eq!(
        out.env_vars[0].value.as_deref(),
        Some("scheduled__2024-01-01T00:00:00+00:00/2")
    );
    // only the declared template fields are rendered
    assert_eq!(out.env_vars[1].value_from, spec.env_vars[1].value_from);
    assert_eq!(out.labels["team"], "{{ ds }}");
    assert_eq!(out.image, "python:3.12-slim");
    assert!(needs(&updraft_template::pod_templates(&spec)).variables);

    spec.env_vars[0].value = Some("{{ nope }}".into());
    let e = updraft_template::render_pod(&spec, &f.ctx(), &s).unwrap_err();
    assert_eq!(e.field(), "env_vars.RUN");
    spec.arguments[1] = "{% if %}".into();
    let e = updraft_template::render_pod(&spec, &f.ctx(), &s).unwrap_err();
    assert_eq!(e.field(), "arguments[1]");
}
