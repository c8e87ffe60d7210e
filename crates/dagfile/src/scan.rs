//! Walking a DAGs folder: which files are DAG files, and one bad file never hides the others.

use crate::{Error, ParseOptions, dag};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use updraft_core::DagSpec;

/// The result of parsing every DAG file under a folder.
#[derive(Debug, Clone, Default)]
pub struct FolderScan {
    /// DAGs from files that parsed, in path order; a DAG id appears once.
    pub dags: Vec<DagSpec>,
    /// One error per file that failed (or lost a DAG id to an earlier file).
    pub errors: Vec<Error>,
    /// Every `*.yaml`/`*.yml` file seen (not ignored), and every `*.py` file when Python
    /// parsing is on, relative to the folder, `/`-separated, sorted. A file listed here without DAGs or errors is empty.
    pub files: Vec<String>,
}

/// Names of the ignore files, read in every directory. `.airflowignore` is honoured so a folder
/// moved over from Airflow keeps excluding what it excluded there.
const IGNORE_FILES: &[&str] = &[".airflowignore", ".updraftignore"];

pub(crate) fn scan_folder(
    root: &Path,
    opts: &ParseOptions,
    python: Option<&crate::python::PythonOptions>,
) -> FolderScan {
    let mut scan = FolderScan::default();
    let mut files = Vec::new();
    let mut visited = HashSet::new();
    if let Err(e) = walk(root, "", &[], &mut visited, &mut files) {
        scan.errors.push(Error {
            file: String::new(),
            line: None,
            message: format!("cannot read DAGs folder `{}`: {e}", root.display()),
        });
    }
    if python.is_none() {
        files.retain(|f| !f.ends_with(".py"));
    }
    files.sort();
    // Python files are parsed first, together (a pool of interpreters); their DAGs are then
    // merged in path order with the YAML ones.
    let mut py_results: HashMap<String, crate::python::FileResult> = match python {
        Some(py) => crate::python::parse_folder_files(root, &files, py, opts)
            .into_iter()
            .collect(),
        None => HashMap::new(),
    };
    // dag_id -> (file that defined it first)
    let mut owners: HashMap<String, String> = HashMap::new();
    for rel in &files {
        if rel.ends_with(".py") {
            match py_results.remove(rel) {
                Some(Ok(dags)) => {
                    let mut clash = None;
                    for d in dags {
                        match owners.get(&d.dag_id) {
                            Some(first) => {
                                clash.get_or_insert(Error {
                                    file: rel.clone(),
                                    line: None,
                                    message: format!(
                                        "dag_id `{}` is already defined in `{first}`; this \
                                         definition is ignored",
                                        d.dag_id
                                    ),
                                });
                            }
                            None => {
                                owners.insert(d.dag_id.clone(), rel.clone());
                                scan.dags.push(d);
                            }
                        }
                    }
                    scan.errors.extend(clash);
                }
                Some(Err(errs)) => scan.errors.extend(errs),
                // Not a DAG file (Airflow's safe mode: it mentions neither `airflow` nor `dag`).
                None => {}
            }
            continue;
        }
        let text = match std::fs::read(root.join(rel)) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    scan.errors.push(Error {
                        file: rel.clone(),
                        line: None,
                        message: "file is not valid UTF-8".into(),
                    });
                    continue;
                }
            },
            Err(e) => {
                scan.errors.push(Error {
                    file: rel.clone(),
                    line: None,
                    message: format!("cannot read file: {e}"),
                });
                continue;
            }
        };
        match dag::parse_file(rel, &text, opts) {
            Ok(parsed) => {
                let mut clash = None;
                for d in parsed {
                    match owners.get(&d.spec.dag_id) {
                        Some(first) => {
                            // Report the first clash of this file; keep its other DAGs.
                            clash.get_or_insert(Error {
                                file: rel.clone(),
                                line: Some(d.dag_id_line),
                                message: format!(
                                    "dag_id `{}` is already defined in `{first}`; this \
                                     definition is ignored",
                                    d.spec.dag_id
                                ),
                            });
                        }
                        None => {
                            owners.insert(d.spec.dag_id.clone(), rel.clone());
                            scan.dags.push(d.spec);
                        }
                    }
                }
                scan.errors.extend(clash);
            }
            Err(e) => scan.errors.push(e),
        }
    }
    scan.files = files;
    scan
}

/// An ignore pattern and the directory (relative, `/`-terminated or empty) it was written in.
#[derive(Debug, Clone)]
struct Rule {
    base: String,
    pattern: Pattern,
}

fn walk(
    dir: &Path,
    rel_dir: &str,
    inherited: &[Rule],
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<String>,
) -> std::io::Result<()> {
    // Symlinked directories are followed (as Airflow does) but each real directory once.
    if let Ok(real) = dir.canonicalize()
        && !visited.insert(real)
    {
        return Ok(());
    }
    let mut rules = inherited.to_vec();
    for name in IGNORE_FILES {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            rules.extend(text.lines().filter_map(Pattern::parse).map(|pattern| Rule {
                base: rel_dir.to_string(),
                pattern,
            }));
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = format!("{rel_dir}{name}");
        // `metadata` follows symlinks; a dangling link is skipped.
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if ignored(&rules, &rel, meta.is_dir()) {
            continue;
        }
        if meta.is_dir() {
            walk(&entry.path(), &format!("{rel}/"), &rules, visited, out)?;
        } else if meta.is_file()
            && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".py"))
        {
            out.push(rel);
        }
    }
    Ok(())
}

/// gitignore-style: the last matching rule decides, `!` re-includes.
fn ignored(rules: &[Rule], rel: &str, is_dir: bool) -> bool {
    let mut result = false;
    for rule in rules {
        let Some(sub) = rel.strip_prefix(rule.base.as_str()) else {
            continue;
        };
        if rule.pattern.matches(sub, is_dir) {
            result = !rule.pattern.negated;
        }
    }
    result
}

/// One line of an ignore file, in the glob syntax of Airflow 3's default
/// `dag_ignore_file_syntax = glob`: `*`, `?`, `**`, `[abc]`, a leading `/` anchors to the
/// ignore file's directory, a trailing `/` matches directories only, `!` negates, `#` comments.
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    glob: String,
    negated: bool,
    dir_only: bool,
    /// Contains a `/` (other than a trailing one): matched against the whole relative path;
    /// otherwise against the last component at any depth.
    anchored: bool,
}

impl Pattern {
    fn parse(line: &str) -> Option<Pattern> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (negated, rest) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let (dir_only, rest) = match rest.strip_suffix('/') {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let anchored = rest.contains('/');
        let glob = rest.trim_start_matches('/').to_string();
        if glob.is_empty() {
            return None;
        }
        Some(Pattern {
            glob,
            negated,
            dir_only,
            anchored,
        })
    }

    fn matches(&self, rel: &str, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if self.anchored {
            glob_match(self.glob.as_bytes(), rel.as_bytes())
        } else {
            let last = rel.rsplit('/').next().unwrap_or(rel);
            glob_match(self.glob.as_bytes(), last.as_bytes())
        }
    }
}

/// Glob matching where `*` and `?` stay within one path component and `**` crosses them.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            // `**/` also matches zero directories.
            let rest = &p[2..];
            let rest_after_slash = rest.strip_prefix(b"/").unwrap_or(rest);
            (0..=s.len())
                .any(|i| glob_match(rest, &s[i..]) || (i == 0 && glob_match(rest_after_slash, s)))
        }
        Some(b'*') => (0..=s.len())
            .take_while(|&i| i == 0 || s[i - 1] != b'/')
            .any(|i| glob_match(&p[1..], &s[i..])),
        Some(b'?') => s.first().is_some_and(|&c| c != b'/') && glob_match(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == b']').map(|e| e + 1) else {
                return s.first() == Some(&b'[') && glob_match(&p[1..], &s[1..]);
            };
            let Some(&c) = s.first() else {
                return false;
            };
            let class = &p[1..end];
            let (negate, class) = match class.first() {
                Some(b'!' | b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && c != b'/' && glob_match(&p[end + 1..], &s[1..])
        }
        Some(&pc) => s.first() == Some(&pc) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ig(patterns: &str, rel: &str, is_dir: bool) -> bool {
        let rules: Vec<Rule> = patterns
            .lines()
            .filter_map(Pattern::parse)
            .map(|pattern| Rule {
                base: String::new(),
                pattern,
            })
            .collect();
        ignored(&rules, rel, is_dir)
    }

    #[test]
    fn glob_rules() {
        assert!(ig("*.yml", "a/b/c.yml", false));
        assert!(!ig("*.yml", "a/b/c.yaml", false));
        assert!(ig("scratch/", "scratch", true));
        assert!(!ig("scratch/", "scratch", false));
        assert!(ig("/top.yaml", "top.yaml", false));
        assert!(!ig("/top.yaml", "sub/top.yaml", false));
        assert!(ig("sub/*.yaml", "sub/x.yaml", false));
        assert!(!ig("sub/*.yaml", "sub/deeper/x.yaml", false));
        assert!(ig("sub/**/x.yaml", "sub/deeper/more/x.yaml", false));
        assert!(ig("sub/**/x.yaml", "sub/x.yaml", false));
        assert!(ig("draft_?.yaml", "draft_1.yaml", false));
        assert!(ig("draft_[0-9].yaml", "draft_7.yaml", false));
        assert!(!ig("draft_[!0-9].yaml", "draft_7.yaml", false));
        assert!(!ig("*.yaml\n!keep.yaml", "keep.yaml", false));
        assert!(!ig("# *.yaml", "x.yaml", false));
    }
}
