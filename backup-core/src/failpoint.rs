//! Named failpoints for the fault-injection tests (docs/RELIABILITY.md): at every durable write,
//! commit, lease and protocol step that matters, a test can make pgstream stop (`pause`, then
//! kill -9), fail with an injected error (`return`), panic or sleep. They are compiled in only
//! with the `failpoints` cargo feature, which the test suite's binary has and a release build
//! does not; without it every failpoint is nothing.
//!
//! `PGSTREAM_FAILPOINTS="name=action;name=action"` configures them (actions as the `fail` crate
//! takes them: `pause`, `return`, `panic`, `sleep(ms)`, `off`, with `N%` and `N*` prefixes).

/// A failpoint where execution can be paused, slowed or crashed, but not made to return.
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        fail::fail_point!($name)
    };
    ($name:expr, $err:expr) => {
        fail::fail_point!($name, |_| Err($err))
    };
}

/// The environment variable that configures failpoints.
pub const ENV: &str = "PGSTREAM_FAILPOINTS";

/// Configures the failpoints named in [`ENV`]. A no-op without the `failpoints` feature.
/// Returns how many were configured.
pub fn configure_from_env() -> Result<usize, String> {
    if !cfg!(feature = "failpoints") {
        return Ok(0);
    }
    let Ok(spec) = std::env::var(ENV) else {
        return Ok(0);
    };
    let mut n = 0;
    for item in spec.split(';').filter(|s| !s.trim().is_empty()) {
        let (name, action) = item
            .split_once('=')
            .ok_or_else(|| format!("{ENV}: {item:?} is not name=action"))?;
        fail::cfg(name.trim(), action.trim()).map_err(|e| format!("{ENV}: {name}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

/// An injected I/O error, as a failpoint's `return` action produces.
pub fn injected(name: &str) -> std::io::Error {
    std::io::Error::other(format!("injected failure at failpoint {name}"))
}
