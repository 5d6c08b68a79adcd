//! Named failpoints for the fault-injection tests (docs/RELIABILITY.md): at every durable write,
//! commit, lease and protocol step that matters, a test can make pgstream stop (`pause`, then
//! kill -9), fail with an injected error (`return`), panic or sleep. They are compiled in only
//! with the `failpoints` cargo feature, which the test suite's binary has and a release build
//! does not; without it every failpoint is nothing.
//!
//! `PGSTREAM_FAILPOINTS="name=action;name=action"` configures them (actions as the `fail` crate
//! takes them: `return[(ARG)]`, `panic`, `sleep(ms)`, `off`, with `N%` and `N*` prefixes, chained
//! with `->`), plus `stop` and `N*off->stop`: at the failpoint's first (or N+1st) hit, print
//! `pgstream: failpoint NAME reached: stopped (pid P)` on stderr and block that thread for
//! good, so a test knows exactly when to kill -9. (The `fail` crate's own `pause` gives no
//! such sign.)

/// A failpoint. `failpoint!(name)` can pause, slow or crash execution, but not make it return;
/// `failpoint!(name, |e| error)` also returns `Err(error)` built from `e`, the injected
/// `io::Error` (see [`injected_with`]); `failpoint!(name, error)` returns `Err(error)`.
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {
        fail::fail_point!($name)
    };
    ($name:expr, |$e:ident| $err:expr) => {
        fail::fail_point!($name, |arg| {
            let $e = $crate::failpoint::injected_with($name, arg);
            Err($err)
        })
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
        let (name, action) = (name.trim(), action.trim());
        match stop_after(action) {
            Some(skip) => fail::cfg_callback(name, stop_callback(name.to_string(), skip)),
            None => fail::cfg(name, action),
        }
        .map_err(|e| format!("{ENV}: {name}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

/// `stop` → `Some(0)`, `N*off->stop` → `Some(N)`, anything else `None`.
fn stop_after(action: &str) -> Option<usize> {
    if action == "stop" {
        return Some(0);
    }
    let (count, rest) = action.split_once("*off->")?;
    (rest == "stop").then(|| count.parse().ok()).flatten()
}

/// Lets the first `skip` hits pass, then announces the stop and blocks the thread for good.
fn stop_callback(name: String, skip: usize) -> impl Fn() + Send + Sync + 'static {
    let hits = std::sync::atomic::AtomicUsize::new(0);
    move || {
        if hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < skip {
            return;
        }
        eprintln!(
            "pgstream: failpoint {name} reached: stopped (pid {})",
            std::process::id()
        );
        loop {
            std::thread::park();
        }
    }
}

/// An injected I/O error, as a failpoint's `return` action produces.
pub fn injected(name: &str) -> std::io::Error {
    std::io::Error::other(format!("injected failure at failpoint {name}"))
}

/// The error a failpoint's `return(ARG)` injects: with `ARG` an errno name (`EIO`, `ENOSPC`,
/// `EDQUOT`, `EROFS`, `ECONNRESET`) the error of that kind, as the system would give it, its
/// message naming the failpoint; otherwise [`injected`].
pub fn injected_with(name: &str, arg: Option<String>) -> std::io::Error {
    let errno = match arg.as_deref().map(str::trim) {
        Some("EIO") => libc::EIO,
        Some("ENOSPC") => libc::ENOSPC,
        Some("EDQUOT") => libc::EDQUOT,
        Some("EROFS") => libc::EROFS,
        Some("ECONNRESET") => libc::ECONNRESET,
        _ => return injected(name),
    };
    let os = std::io::Error::from_raw_os_error(errno);
    std::io::Error::new(os.kind(), format!("{os}, injected at failpoint {name}"))
}

/// Evaluates failpoint `name` where no early return fits (a helper thread that records its
/// error): `Some(error)` when it is set to `return[(ARG)]` (see [`injected_with`]). Pauses,
/// sleeps and panics happen inside. Always `None` without the `failpoints` feature.
pub fn io(name: &str) -> Option<std::io::Error> {
    if !cfg!(feature = "failpoints") {
        return None;
    }
    fail::eval(name, |arg| injected_with(name, arg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_actions_are_recognised() {
        assert_eq!(stop_after("stop"), Some(0));
        assert_eq!(stop_after("3*off->stop"), Some(3));
        assert_eq!(stop_after("pause"), None);
        assert_eq!(stop_after("1*off->return"), None);
        assert_eq!(stop_after("x*off->stop"), None);
    }

    /// The names of the failpoints placed in backup-core's source.
    fn placed() -> std::collections::BTreeSet<String> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut names = std::collections::BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for marker in ["failpoint!(", "failpoint::io("] {
                for (at, _) in text.match_indices(marker) {
                    let rest = text[at + marker.len()..].trim_start();
                    let name = rest.strip_prefix('"').and_then(|r| r.split('"').next());
                    let plain = |c: char| c.is_ascii_lowercase() || c == '.' || c == '-';
                    if let Some(name) = name.filter(|n| !n.is_empty() && n.chars().all(plain)) {
                        names.insert(name.to_string());
                    }
                }
            }
        }
        names
    }

    /// Every failpoint is listed in docs/RELIABILITY.md and exercised by an integration test.
    #[test]
    fn every_failpoint_is_documented_and_tested() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/RELIABILITY.md")).unwrap();
        let mut tests = String::new();
        for e in std::fs::read_dir(root.join("integration/tests"))
            .unwrap()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "rs") {
                tests.push_str(&std::fs::read_to_string(e.path()).unwrap());
            }
        }
        let names = placed();
        assert!(names.len() >= 20, "{names:?}");
        for name in &names {
            assert!(
                doc.contains(&format!("`{name}`")),
                "failpoint {name} is not in docs/RELIABILITY.md"
            );
            assert!(
                tests.contains(&format!("\"{name}=")) || tests.contains(&format!(";{name}=")),
                "no integration test sets failpoint {name}"
            );
        }
    }

    #[test]
    fn injected_errors_name_the_failpoint_and_carry_the_errno() {
        let e = injected_with("store.sync", Some("EIO".into()));
        assert!(e.to_string().contains("Input/output error"), "{e}");
        assert!(e.to_string().contains("failpoint store.sync"), "{e}");
        let e = injected_with("store.put", Some("ENOSPC".into()));
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        let e = injected_with("store.put", None);
        assert_eq!(e.to_string(), "injected failure at failpoint store.put");
    }
}
