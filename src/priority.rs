//! Scheduling priority of the threads that run bulk work (embedding upserted passages, building
//! and compacting indexes, writing snapshots), so that the threads answering queries get the
//! CPU first whenever both want it.
//!
//! On Linux a thread's nice value is its own (`setpriority` on its thread id), and the kernel's
//! fair scheduler shares a contended CPU among threads in proportion to weights that fall by
//! about 1.25× per nice step: a thread at nice 10 gets about a tenth of a CPU it contends for
//! with a nice-0 thread, and all of it when nothing else wants it. So a lowered thread costs
//! queries little of their latency, unlike a fixed split of the CPU, and bulk work still moves
//! under saturating query load instead of starving. An unprivileged process can raise a nice
//! value but not lower it again, which is why bulk work gets threads of its own rather than
//! lending and taking back the priority of shared ones.
//!
//! Elsewhere the calls are no-ops: bulk work then competes with queries as an equal.

use std::io;

/// Highest nice value, the lowest priority, Linux gives a normal thread.
pub const MAX_NICE: i32 = 19;

/// Weight ratio of consecutive nice values in Linux's fair scheduler.
const NICE_STEP: f64 = 1.25;

/// The nice value under which a thread keeps about `share` of a CPU it contends for with a
/// thread of nice 0 (`share` between 0 and 1; at least half gives 0, the same priority; 0
/// gives [`MAX_NICE`], about 1.5 %).
pub fn nice_for_share(share: f64) -> i32 {
    if share.is_nan() || share <= 0.0 {
        return MAX_NICE;
    }
    if share >= 0.5 {
        return 0;
    }
    // Weights w0 (nice 0) and w: share = w / (w + w0), and w0 / w = 1.25^nice.
    let ratio = (1.0 - share) / share;
    (ratio.ln() / NICE_STEP.ln())
        .round()
        .clamp(0.0, MAX_NICE as f64) as i32
}

/// Lowers the calling thread's priority to nice `nice` (clamped to 0..=[`MAX_NICE`]); a thread
/// already at that nice value or lower in priority is left as it is. Threads it starts later
/// start from its priority.
///
/// # Errors
/// What `setpriority` reports (it does not fail for raising one's own nice value).
pub fn lower_current_thread(nice: i32) -> io::Result<()> {
    let nice = nice.clamp(0, MAX_NICE);
    if nice == 0 || current_nice()? >= nice {
        return Ok(());
    }
    set_current_nice(nice)
}

/// The calling thread's nice value (0 where threads have no priority of their own).
///
/// # Errors
/// What `getpriority` reports.
pub fn current_nice() -> io::Result<i32> {
    imp::current_nice()
}

fn set_current_nice(nice: i32) -> io::Result<()> {
    imp::set_current_nice(nice)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;

    use rustix::process::{getpriority_process, setpriority_process};
    use rustix::thread::gettid;

    // On Linux, the "process" these take is a thread id: the priority is the thread's own.
    pub(super) fn current_nice() -> io::Result<i32> {
        Ok(getpriority_process(Some(gettid()))?)
    }

    pub(super) fn set_current_nice(nice: i32) -> io::Result<()> {
        Ok(setpriority_process(Some(gettid()), nice)?)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;

    pub(super) fn current_nice() -> io::Result<i32> {
        Ok(0)
    }

    pub(super) fn set_current_nice(_nice: i32) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_map_to_the_schedulers_weights() {
        assert_eq!(nice_for_share(0.5), 0);
        assert_eq!(nice_for_share(0.9), 0);
        assert_eq!(nice_for_share(0.1), 10);
        assert_eq!(nice_for_share(0.0), MAX_NICE);
        assert_eq!(nice_for_share(f64::NAN), MAX_NICE);
        assert_eq!(nice_for_share(1e-9), MAX_NICE);
        // Monotonic: a smaller share never gets a higher priority.
        let mut last = 0;
        for i in (1..=500).rev() {
            let nice = nice_for_share(i as f64 / 1000.0);
            assert!(nice >= last);
            last = nice;
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn lowering_affects_only_the_calling_thread() {
        let before = current_nice().unwrap();
        let lowered = std::thread::spawn(|| {
            lower_current_thread(7).unwrap();
            let after = current_nice().unwrap();
            // Lowering again to a higher priority changes nothing.
            lower_current_thread(3).unwrap();
            (after, current_nice().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before.max(7), before.max(7)));
        assert_eq!(current_nice().unwrap(), before);
    }
}
