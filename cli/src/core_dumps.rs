//! No core dumps: a pgstream process may hold the repository's data key (and the passphrase),
//! and a core file would write them to disk, readable by whoever can read the dump directory
//! or the crash collector. So every command starts by setting RLIMIT_CORE to 0 (soft and hard:
//! nothing later in the process, nor a child it starts, can raise it again) and, on Linux,
//! clearing the dumpable flag, which also keeps other processes of the same user from attaching
//! with ptrace or reading its memory through /proc.

use std::io;

/// Disables core dumps of this process; the step that failed, if any.
pub fn disable() -> Result<(), (&'static str, io::Error)> {
    use rustix::process::{setrlimit, Resource, Rlimit};
    let zero = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    setrlimit(Resource::Core, zero).map_err(|e| ("setting RLIMIT_CORE to 0", e.into()))?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| ("clearing the dumpable flag (PR_SET_DUMPABLE)", e.into()))?;
    Ok(())
}
