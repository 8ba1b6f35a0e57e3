//! Process hardening at start: no core dumps (they would contain keys) and,
//! unless disabled, all memory locked so keys are never swapped to disk.

/// What hardening achieved, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardening {
    /// Core dumps are off (RLIMIT_CORE = 0 and not dumpable).
    pub core_dumps_disabled: bool,
    /// `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` succeeded.
    pub memory_locked: bool,
}

/// Apply the hardening; failures are reported, not fatal (an unprivileged
/// container may not be allowed to lock memory).
pub fn apply(lock_memory: bool) -> Hardening {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    let rlimit_ok = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }).is_ok();
    // PR_SET_DUMPABLE=0 also blocks ptrace attach by same-uid processes.
    let dumpable_ok = set_dumpable_behavior(DumpableBehavior::NotDumpable).is_ok();
    let memory_locked = lock_memory
        // ONFAULT (Linux 4.4): every page that is touched is locked (so keys
        // never reach swap), but address space merely reserved is not
        // populated: mimalloc reserves a 1 GiB arena up front, which plain
        // MCL_CURRENT|MCL_FUTURE turned into 1 GiB of locked RAM.
        && rustix::mm::mlockall(
            rustix::mm::MlockAllFlags::CURRENT | rustix::mm::MlockAllFlags::FUTURE | rustix::mm::MlockAllFlags::ONFAULT,
        )
        .is_ok();
    Hardening { core_dumps_disabled: rlimit_ok && dumpable_ok, memory_locked }
}

/// Log what [`apply`] achieved.
pub fn report(h: Hardening, lock_requested: bool) {
    if !h.core_dumps_disabled {
        tracing::warn!("could not disable core dumps; a crash could write key material to disk");
    }
    if lock_requested && !h.memory_locked {
        tracing::warn!(
            "mlockall failed (needs CAP_IPC_LOCK or a higher RLIMIT_MEMLOCK); key material may be swapped to disk. \
             Set disable_mlock = true to silence this if swap is encrypted or disabled"
        );
    }
}
