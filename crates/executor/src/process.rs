//! Process-level helpers: reading `/proc/PID/stat`, signalling process groups and killing the
//! leftovers of a previous life of the scheduler.

use std::io;

/// The fields of `/proc/PID/stat` we need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub pgrp: i32,
    /// Field 22: start time in clock ticks after boot. Together with the pid it identifies a
    /// process for good, because a recycled pid always has a later start time.
    pub start_ticks: i64,
}

/// Parses the text of `/proc/PID/stat`. The second field (`comm`) is in parentheses and may
/// itself contain spaces and parentheses, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After `comm`: field 3 is the state, 5 the process group, 22 the start time.
    let state = fields.next()?.chars().next()?;
    let pgrp = fields.nth(1)?.parse().ok()?;
    let start_ticks = fields.nth(16)?.parse().ok()?;
    Some(Stat {
        state,
        pgrp,
        start_ticks,
    })
}

pub(crate) fn read_stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    // /proc is served from memory: this read takes microseconds, so it is fine on the runtime.
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Reads `/proc/PID/stat` field 22 (start time in clock ticks after boot). `None` when the
/// process does not exist (or `/proc` is not available).
pub fn process_start_ticks(pid: i32) -> Option<i64> {
    read_stat(pid).map(|s| s.start_ticks)
}

/// Crash recovery: kills a leftover process group from a previous life of the scheduler, but only
/// if `pid` still runs AND its start time (`/proc/PID/stat` field 22) equals `pid_start_ticks`,
/// so a recycled pid is never killed. The whole group gets SIGKILL when `pid` leads its group
/// (every try we start does); otherwise only `pid` itself does. Returns whether something was
/// killed.
///
/// There is an unavoidable window between the check and the signal in which the process could
/// exit and its pid be reused; it is microseconds wide and the pid space is large.
pub fn kill_orphan(pid: i32, pid_start_ticks: i64) -> io::Result<bool> {
    // kill(0, ..) and kill(-1, ..) mean "my group" and "everything": never let a bad row do that.
    if pid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("pid {pid} is not a task process; pids of tasks are greater than 1"),
        ));
    }
    let Some(stat) = read_stat(pid) else {
        return Ok(false);
    };
    if stat.start_ticks != pid_start_ticks {
        return Ok(false);
    }
    let target = if stat.pgrp == pid { -pid } else { pid };
    match signal(target, libc::SIGKILL) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Sends `sig` to `target` (a negative target is a process group).
pub(crate) fn signal(target: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(target, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Signals a whole process group, ignoring "no such process" (the group is already gone).
pub(crate) fn signal_group(pgid: i32, sig: i32) {
    debug_assert!(pgid > 1, "refusing to signal group {pgid}");
    if pgid <= 1 {
        return;
    }
    if let Err(e) = signal(-pgid, sig)
        && e.raw_os_error() != Some(libc::ESRCH)
    {
        tracing::warn!(pgid, sig, error = %e, "cannot signal a task's process group");
    }
}

/// The conventional name of a signal, for messages a user reads.
pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_tricky_comm() {
        // comm may contain spaces and parentheses; fields are counted from the last ')'.
        let text = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                state: 'S',
                pgrp: 4242,
                start_ticks: 987654
            }
        );
    }

    #[test]
    fn rejects_truncated_stat() {
        assert_eq!(parse_stat("12 (x) S 1 12"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_own_start_ticks() {
        let me = std::process::id() as i32;
        let stat = read_stat(me).unwrap();
        assert!(matches!(stat.state, 'R' | 'S'), "state {}", stat.state);
        assert_eq!(process_start_ticks(me), Some(stat.start_ticks));
        assert_eq!(process_start_ticks(-5), None);
    }

    #[test]
    fn kill_orphan_refuses_group_wildcards() {
        for pid in [-1, 0, 1] {
            let err = kill_orphan(pid, 0).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn names_signals() {
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(77), "signal 77");
    }
}
