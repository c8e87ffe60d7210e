//! Reading the length of a mapped task whose expand input refers to upstream XComs, for the
//! engine's [`Step::need_map_length`](updraft_core::decide::Step::need_map_length). The
//! arithmetic is `updraft_core::mapping`; this reads what it needs from the store.

use updraft_core::decide::{DagVersion, Engine, RunPk};
use updraft_core::mapping::{MapLength, UpstreamLength, total_length, value_length};
use updraft_core::{Operator, TaskState};
use updraft_store::DynStore;

/// What Airflow's XCom key for a task's result is.
const RETURN_VALUE: &str = "return_value";

/// The length of mapped task `task` (an index in the DAG's tasks) in run `pk`, as Airflow's
/// `get_mapped_ti_count` reads it: an unmapped upstream's return value's length (a list, a
/// dict; anything else, or more than `max_map_length` items, cannot be mapped over); a mapped
/// upstream's number of instances that pushed a return value, once all of them are finished.
pub(crate) async fn read_length(
    store: &DynStore,
    engine: &Engine,
    dag: &DagVersion,
    pk: RunPk,
    (dag_id, run_id): (&str, &str),
    task: usize,
    max_map_length: u32,
) -> Result<MapLength, updraft_store::Error> {
    let spec = &dag.spec.tasks[task];
    let Operator::Sdk(sdk) = &spec.operator else {
        return Ok(MapLength::Invalid(format!(
            "cannot expand task `{}`: it is not a mapped task",
            spec.task_id
        )));
    };
    let Some(input) = &sdk.expand_input else {
        return Ok(MapLength::Invalid(format!(
            "cannot expand mapped task `{}`: it has no expand input",
            spec.task_id
        )));
    };
    let refs = updraft_core::mapping::references(input);
    let xcoms: Vec<updraft_store::XCom> = if refs.is_empty() {
        Vec::new()
    } else {
        store
            .list_xcoms(dag_id, run_id)
            .await?
            .into_iter()
            .filter(|x| x.key == RETURN_VALUE && refs.contains(&x.task_id))
            .collect()
    };
    let mut upstream = |up: &str| -> UpstreamLength {
        let Some(u) = dag.spec.tasks.iter().position(|t| t.task_id == up) else {
            return UpstreamLength::Invalid(format!("it refers to an unknown task `{up}`"));
        };
        let up_mapped = matches!(&dag.spec.tasks[u].operator, Operator::Sdk(s) if s.is_mapped);
        if up_mapped {
            let unfinished = engine.instance_slots(pk, u).into_iter().any(|s| {
                engine
                    .ti((pk, s))
                    .is_none_or(|t| !t.state.is_terminal() || t.state == TaskState::None)
            });
            if unfinished {
                return UpstreamLength::Missing;
            }
            let n = xcoms
                .iter()
                .filter(|x| x.task_id == up && x.map_index >= 0)
                .count();
            return UpstreamLength::Known(n);
        }
        let Some(x) = xcoms.iter().find(|x| x.task_id == up && x.map_index < 0) else {
            return UpstreamLength::Missing;
        };
        match value_length(&x.value) {
            Ok(n) if n > max_map_length as usize => UpstreamLength::Invalid(format!(
                "the return value of `{up}` has {n} items, more than core.max_map_length \
                 ({max_map_length})"
            )),
            Ok(n) => UpstreamLength::Known(n),
            Err(e) => UpstreamLength::Invalid(format!("the return value of `{up}`: {e}")),
        }
    };
    Ok(total_length(&spec.task_id, input, &mut upstream))
}
