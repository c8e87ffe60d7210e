//! A layered drawing of a DAG, computed on the server (the Graph tab's SVG).
//!
//! Sugiyama-style, left to right: each task's layer is the length of the longest path from a
//! root to it (roots in layer 0); an edge spanning several layers passes through one virtual
//! point per skipped layer, so it is routed around the nodes in between and takes part in the
//! ordering; within a layer nodes are ordered by alternating barycentric sweeps (downstream,
//! then upstream), and the order with the fewest crossings seen is kept. Everything depends
//! only on the input order, so the same DAG is always drawn the same way.

/// Sizes of the drawing, in SVG user units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub node_width: f64,
    pub node_height: f64,
    /// Horizontal space between layers.
    pub layer_gap: f64,
    /// Vertical space between nodes of a layer.
    pub node_gap: f64,
    pub margin: f64,
    /// Down-and-up sweeps of the barycentric ordering.
    pub sweeps: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            node_width: 170.0,
            node_height: 36.0,
            layer_gap: 70.0,
            node_gap: 16.0,
            margin: 12.0,
            sweeps: 12,
        }
    }
}

/// Where one node is drawn: its top-left corner and size.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeBox {
    pub layer: usize,
    /// Position within its layer, from the top.
    pub order: usize,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

/// One edge, `from` → `to` (node indices), as the points it passes through and an SVG path.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePath {
    pub from: usize,
    pub to: usize,
    pub points: Vec<(f64, f64)>,
    /// `M … C …`: smooth curves through the points, ending at the target's left side.
    pub d: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// One per input node, in input order.
    pub nodes: Vec<NodeBox>,
    pub edges: Vec<EdgePath>,
    pub width: f64,
    pub height: f64,
    /// Edge crossings between adjacent layers in the chosen order.
    pub crossings: usize,
}

/// Lays out `n = upstream.len()` nodes, where `upstream[i]` lists the nodes with an edge into
/// `i`. Nodes on a cycle (which validated DAGs do not have) are put one layer after the rest.
pub fn layout(upstream: &[Vec<usize>], options: &Options) -> Layout {
    let n = upstream.len();
    let layer_of = layers(upstream);
    let layer_count = layer_of.iter().map(|l| l + 1).max().unwrap_or(0);

    // Items to order: the real nodes, then one virtual point per layer an edge skips.
    // `item_layer[k]`; `up[k]`/`down[k]` link adjacent layers only.
    let mut item_layer: Vec<usize> = layer_of.clone();
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); n];
    // Per edge: the chain of items from source to target.
    let mut chains: Vec<(usize, usize, Vec<usize>)> = Vec::new();
    for (to, ups) in upstream.iter().enumerate() {
        let mut seen = Vec::with_capacity(ups.len());
        for &from in ups {
            if from >= n || from == to || seen.contains(&from) {
                continue;
            }
            seen.push(from);
            let (lf, lt) = (layer_of[from], layer_of[to]);
            let mut chain = vec![from];
            if lt > lf {
                for l in lf + 1..lt {
                    let k = item_layer.len();
                    item_layer.push(l);
                    up.push(Vec::new());
                    down.push(Vec::new());
                    chain.push(k);
                }
            }
            chain.push(to);
            for w in chain.windows(2) {
                down[w[0]].push(w[1]);
                up[w[1]].push(w[0]);
            }
            chains.push((from, to, chain));
        }
    }

    // Initial order: input order (virtual points after the nodes, in edge order).
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); layer_count];
    for (k, &l) in item_layer.iter().enumerate() {
        rows[l].push(k);
    }
    let mut pos = vec![0usize; item_layer.len()];
    let index_rows = |rows: &Vec<Vec<usize>>, pos: &mut Vec<usize>| {
        for row in rows {
            for (i, &k) in row.iter().enumerate() {
                pos[k] = i;
            }
        }
    };
    index_rows(&rows, &mut pos);
    let mut best = rows.clone();
    let mut best_crossings = count_crossings(&rows, &down, &pos);
    for sweep in 0..options.sweeps {
        if best_crossings == 0 {
            break;
        }
        let downward = sweep % 2 == 0;
        let order: Vec<usize> = if downward {
            (1..layer_count).collect()
        } else {
            (0..layer_count.saturating_sub(1)).rev().collect()
        };
        for l in order {
            let neighbours = if downward { &up } else { &down };
            let mut keyed: Vec<(f64, usize, usize)> = rows[l]
                .iter()
                .map(|&k| {
                    let ns = &neighbours[k];
                    let centre = if ns.is_empty() {
                        pos[k] as f64
                    } else {
                        ns.iter().map(|&m| pos[m] as f64).sum::<f64>() / ns.len() as f64
                    };
                    (centre, pos[k], k)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            rows[l] = keyed.into_iter().map(|(_, _, k)| k).collect();
            for (i, &k) in rows[l].iter().enumerate() {
                pos[k] = i;
            }
        }
        let c = count_crossings(&rows, &down, &pos);
        if c < best_crossings {
            best_crossings = c;
            best = rows.clone();
        }
    }
    let rows = best;
    index_rows(&rows, &mut pos);

    // Coordinates: layers are columns; each column is centred on the tallest one. Virtual
    // points take a node's slot so long edges pass between nodes, not through them.
    let slot = options.node_height + options.node_gap;
    let tallest = rows.iter().map(Vec::len).max().unwrap_or(0);
    let height = options.margin * 2.0 + (tallest as f64 * slot - options.node_gap).max(0.0);
    let width = options.margin * 2.0
        + (layer_count as f64 * (options.node_width + options.layer_gap) - options.layer_gap)
            .max(0.0);
    let top_of = |l: usize| options.margin + (tallest - rows[l].len()) as f64 * slot / 2.0;
    let x_of = |l: usize| options.margin + l as f64 * (options.node_width + options.layer_gap);
    let mut centre = vec![(0.0, 0.0); item_layer.len()];
    for (l, row) in rows.iter().enumerate() {
        for (i, &k) in row.iter().enumerate() {
            let y = top_of(l) + i as f64 * slot;
            centre[k] = (
                x_of(l) + options.node_width / 2.0,
                y + options.node_height / 2.0,
            );
        }
    }
    let nodes = (0..n)
        .map(|k| NodeBox {
            layer: item_layer[k],
            order: pos[k],
            x: centre[k].0 - options.node_width / 2.0,
            y: centre[k].1 - options.node_height / 2.0,
            width: options.node_width,
            height: options.node_height,
        })
        .collect();
    let half = options.node_width / 2.0;
    let edges = chains
        .into_iter()
        .map(|(from, to, chain)| {
            let last = chain.len() - 1;
            let points: Vec<(f64, f64)> = chain
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let (x, y) = centre[k];
                    if i == 0 {
                        (x + half, y)
                    } else if i == last {
                        (x - half, y)
                    } else {
                        (x, y)
                    }
                })
                .collect();
            EdgePath {
                from,
                to,
                d: path(&points),
                points,
            }
        })
        .collect();
    Layout {
        nodes,
        edges,
        width,
        height,
        crossings: best_crossings,
    }
}

/// Longest-path layering: roots are 0, every other node one more than its deepest upstream.
pub fn layers(upstream: &[Vec<usize>]) -> Vec<usize> {
    let n = upstream.len();
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for (to, ups) in upstream.iter().enumerate() {
        for &from in ups {
            if from < n && from != to {
                downstream[from].push(to);
                indegree[to] += 1;
            }
        }
    }
    let mut layer = vec![0usize; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).rev().collect();
    let mut done = vec![false; n];
    while let Some(i) = ready.pop() {
        done[i] = true;
        for &d in &downstream[i] {
            layer[d] = layer[d].max(layer[i] + 1);
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    let deepest = (0..n).filter(|&i| done[i]).map(|i| layer[i]).max();
    for i in 0..n {
        if !done[i] {
            layer[i] = deepest.map_or(0, |d| d + 1);
        }
    }
    layer
}

/// Crossings between every pair of adjacent layers: inversions of the edges' lower ends once
/// sorted by their upper ends (merge-sort count, O(E log E) per layer pair).
fn count_crossings(rows: &[Vec<usize>], down: &[Vec<usize>], pos: &[usize]) -> usize {
    let mut total = 0;
    for row in rows {
        let mut ends: Vec<(usize, usize)> = Vec::new();
        for &k in row {
            for &m in &down[k] {
                ends.push((pos[k], pos[m]));
            }
        }
        ends.sort_unstable();
        let mut lower: Vec<usize> = ends.into_iter().map(|(_, b)| b).collect();
        total += inversions(&mut lower);
    }
    total
}

fn inversions(v: &mut [usize]) -> usize {
    if v.len() < 2 {
        return 0;
    }
    let mid = v.len() / 2;
    let mut count = inversions(&mut v[..mid]) + inversions(&mut v[mid..]);
    let mut merged = Vec::with_capacity(v.len());
    let (mut i, mut j) = (0, mid);
    while i < mid && j < v.len() {
        if v[j] < v[i] {
            count += mid - i;
            merged.push(v[j]);
            j += 1;
        } else {
            merged.push(v[i]);
            i += 1;
        }
    }
    merged.extend_from_slice(&v[i..mid]);
    merged.extend_from_slice(&v[j..]);
    v.copy_from_slice(&merged);
    count
}

/// A smooth path through `points`: horizontal tangents at every point.
fn path(points: &[(f64, f64)]) -> String {
    let mut d = String::new();
    let Some(&(x0, y0)) = points.first() else {
        return d;
    };
    d.push_str(&format!("M{x0:.1},{y0:.1}"));
    for w in points.windows(2) {
        let ((ax, ay), (bx, by)) = (w[0], w[1]);
        let mid = (bx - ax) / 2.0;
        d.push_str(&format!(
            " C{:.1},{ay:.1} {:.1},{by:.1} {bx:.1},{by:.1}",
            ax + mid,
            bx - mid
        ));
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(n: usize, edges: &[(usize, usize)]) -> Vec<Vec<usize>> {
        let mut u = vec![Vec::new(); n];
        for &(a, b) in edges {
            u[b].push(a);
        }
        u
    }

    fn overlaps(a: &NodeBox, b: &NodeBox) -> bool {
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
    }

    fn assert_no_overlap(l: &Layout) {
        for (i, a) in l.nodes.iter().enumerate() {
            for b in &l.nodes[i + 1..] {
                assert!(!overlaps(a, b), "{a:?} overlaps {b:?}");
            }
            assert!(a.x >= 0.0 && a.y >= 0.0);
            assert!(a.x + a.width <= l.width && a.y + a.height <= l.height);
        }
    }

    #[test]
    fn a_diamond_has_three_layers_and_no_crossing() {
        // a → b, a → c, b → d, c → d
        let l = layout(
            &ups(4, &[(0, 1), (0, 2), (1, 3), (2, 3)]),
            &Options::default(),
        );
        let layer: Vec<usize> = l.nodes.iter().map(|n| n.layer).collect();
        assert_eq!(layer, [0, 1, 1, 2]);
        assert_eq!(l.crossings, 0);
        assert_eq!(l.edges.len(), 4);
        assert_no_overlap(&l);
        // Left to right: every edge starts at its source's right side and ends at its target's
        // left side.
        for e in &l.edges {
            let (from, to) = (&l.nodes[e.from], &l.nodes[e.to]);
            assert_eq!(e.points[0].0, from.x + from.width);
            assert_eq!(e.points.last().unwrap().0, to.x);
            assert!(e.d.starts_with('M') && e.d.contains(" C"));
        }
        // b and c are one above the other, d is centred between them like a.
        assert_eq!(l.nodes[1].x, l.nodes[2].x);
        assert_ne!(l.nodes[1].y, l.nodes[2].y);
        assert_eq!(l.nodes[0].y, l.nodes[3].y);
    }

    #[test]
    fn longest_path_layering_puts_a_task_after_its_deepest_upstream() {
        // a → b → c, a → c: c is in layer 2, and a → c passes one virtual point.
        let u = ups(3, &[(0, 1), (1, 2), (0, 2)]);
        assert_eq!(layers(&u), [0, 1, 2]);
        let l = layout(&u, &Options::default());
        let long = l.edges.iter().find(|e| e.from == 0 && e.to == 2).unwrap();
        assert_eq!(long.points.len(), 3);
        // The virtual point has a slot of its own in layer 1, off b's box.
        let b = &l.nodes[1];
        let (vx, vy) = long.points[1];
        assert!(vx > b.x && vx < b.x + b.width);
        assert!(vy < b.y || vy > b.y + b.height);
        assert_no_overlap(&l);
    }

    #[test]
    fn a_wide_fan_out_stacks_every_child_in_one_layer() {
        let n = 60;
        let edges: Vec<(usize, usize)> = (1..n).map(|i| (0, i)).collect();
        let l = layout(&ups(n, &edges), &Options::default());
        assert!(l.nodes[1..].iter().all(|b| b.layer == 1));
        let mut orders: Vec<usize> = l.nodes[1..].iter().map(|b| b.order).collect();
        orders.sort_unstable();
        assert_eq!(orders, (0..n - 1).collect::<Vec<_>>());
        // Children keep their input order, and the parent sits at their middle.
        assert!(l.nodes[1..].windows(2).all(|w| w[0].y < w[1].y));
        let mid = (l.nodes[1].y + l.nodes[n - 1].y) / 2.0;
        assert!((l.nodes[0].y - mid).abs() < 1e-9);
        assert_eq!(l.crossings, 0);
        assert_no_overlap(&l);
    }

    #[test]
    fn disconnected_tasks_share_the_first_layer() {
        let l = layout(&ups(5, &[]), &Options::default());
        assert!(l.nodes.iter().all(|b| b.layer == 0));
        assert!(l.edges.is_empty());
        assert_no_overlap(&l);
        // Two separate chains side by side.
        let l = layout(&ups(4, &[(0, 1), (2, 3)]), &Options::default());
        let layer: Vec<usize> = l.nodes.iter().map(|n| n.layer).collect();
        assert_eq!(layer, [0, 1, 0, 1]);
        assert_eq!(l.crossings, 0);
        assert_no_overlap(&l);
    }

    #[test]
    fn barycentric_sweeps_remove_avoidable_crossings() {
        // a → d, b → c with c listed before d: drawn in input order the two edges cross.
        let u = ups(4, &[(0, 3), (1, 2)]);
        let l = layout(&u, &Options::default());
        assert_eq!(l.crossings, 0);
        assert!(l.nodes[3].y < l.nodes[2].y, "d moves up next to a");
        // A K2,2 crosses once whatever the order: the count says so.
        let k22 = layout(
            &ups(4, &[(0, 2), (0, 3), (1, 2), (1, 3)]),
            &Options::default(),
        );
        assert_eq!(k22.crossings, 1);
    }

    #[test]
    fn the_same_dag_is_always_drawn_the_same_way() {
        let edges: Vec<(usize, usize)> = (0..40)
            .flat_map(|i| [(i, (i * 7 + 3) % 40), (i, (i * 13 + 5) % 40)])
            .filter(|(a, b)| a < b)
            .collect();
        let u = ups(40, &edges);
        let first = layout(&u, &Options::default());
        for _ in 0..3 {
            assert_eq!(layout(&u, &Options::default()), first);
        }
        assert_no_overlap(&first);
        // Every edge goes from a lower layer to a higher one.
        for e in &first.edges {
            assert!(first.nodes[e.from].layer < first.nodes[e.to].layer);
        }
    }

    #[test]
    fn a_cycle_does_not_hang_and_is_drawn_after_the_rest() {
        let l = layout(&ups(3, &[(0, 1), (1, 2), (2, 1)]), &Options::default());
        assert_eq!(l.nodes[0].layer, 0);
        assert_eq!(l.nodes[1].layer, 1);
        assert_eq!(l.nodes[2].layer, 1);
        assert!(layout(&[], &Options::default()).nodes.is_empty());
    }

    #[test]
    fn inversions_count_pairs_out_of_order() {
        assert_eq!(inversions(&mut [0, 1, 2]), 0);
        assert_eq!(inversions(&mut [2, 1, 0]), 3);
        assert_eq!(inversions(&mut [1, 0, 1, 0]), 3);
    }
}
