//! CPU clocks: how much CPU this thread has used (`clock_gettime`), and the length of the
//! clock tick `/proc` counts CPU time in. Tests use the thread clock to show that an idle
//! loop sleeps (its CPU time does not grow) and the benches to cost a piece of work.

use std::time::Duration;

/// CPU time (user + system) consumed by the calling thread so far.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a live timespec for the kernel to fill; CLOCK_THREAD_CPUTIME_ID is
    // always supported on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, normally 100): the unit of the CPU times
/// in `/proc/PID/stat`. Falls back to 100 if sysconf reports nothing.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name, reads no memory of ours and has no side effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let t0 = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time() - t0;
        assert!(slept < Duration::from_millis(40), "sleeping used {slept:?} of CPU");
        // Spinning moves the clock: at least 5 ms of CPU within 5 s of wall time, however
        // busy the machine is.
        let t1 = thread_cpu_time();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while thread_cpu_time() - t1 < Duration::from_millis(5) {
            assert!(spin.elapsed() < Duration::from_secs(5), "spinning used no CPU");
            x = std::hint::black_box(x.wrapping_add(1));
        }
    }

    #[test]
    fn ticks_are_positive() {
        assert!(clock_ticks_per_second() > 0);
    }
}
