//! How an `s3://bucket/prefix` repository is reached: credentials, region and endpoint, read
//! the way the AWS tools read them (docs/cli.md, "S3 repositories"). Secrets come only from the
//! environment or the shared credentials file, never from the command line.
//!
//! - credentials: the profile `AWS_PROFILE` (or `default`) of the file given with
//!   `--s3-credentials-file` ([`set_credentials_file`]); else `AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`; else that profile of the shared credentials
//!   file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`);
//! - region: `AWS_REGION`, `AWS_DEFAULT_REGION`, else the profile's `region` in the config file
//!   (`AWS_CONFIG_FILE`, default `~/.aws/config`), else `us-east-1`;
//! - endpoint: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else the profile's `endpoint_url`;
//!   with an endpoint, requests use path-style addressing (what S3-compatible stores expect),
//!   and plain `http://` is accepted only for a loopback host.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

static CREDENTIALS_FILE: OnceLock<PathBuf> = OnceLock::new();

/// Makes every S3 store of this process take its credentials from `path` (the CLI's
/// `--s3-credentials-file`), ahead of the environment. A relative path is made absolute (it is
/// also written into restore_command, which runs elsewhere). Set once; later calls are ignored.
pub fn set_credentials_file(path: PathBuf) {
    let path = if path.is_relative() {
        std::env::current_dir().map_or(path.clone(), |d| d.join(&path))
    } else {
        path
    };
    let _ = CREDENTIALS_FILE.set(path);
}

/// Everything needed to reach a bucket.
#[derive(Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub allow_http: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Where the credentials came from, for messages (never the secret itself).
    pub credentials_from: String,
    /// The shared credentials file they were read from (`None`: the environment).
    pub credentials_file: Option<PathBuf>,
    /// The profile of the shared files.
    pub profile: String,
}

impl S3Settings {
    /// The environment a command run by another process (the restored server's
    /// restore_command, which has none of ours) needs to reach the same bucket the same way:
    /// endpoint, region, profile and the credentials file, never a secret. Refused (with what
    /// to do) when the credentials came from environment variables only.
    pub fn command_env(&self) -> Result<Vec<(&'static str, String)>, String> {
        let Some(file) = &self.credentials_file else {
            return Err(format!(
                "the S3 credentials came from {}, which a command the server runs will not \
                 have, and secrets are never written into postgresql.auto.conf: name a shared \
                 credentials file the server's operating-system user can read with \
                 --s3-credentials-file FILE (or AWS_SHARED_CREDENTIALS_FILE), or restore with \
                 --copy-wal (then no restore_command reads the repository); nothing was written",
                self.credentials_from
            ));
        };
        let file = if file.is_relative() {
            std::env::current_dir().map_or(file.clone(), |d| d.join(file))
        } else {
            file.clone()
        };
        let mut env = vec![
            ("AWS_SHARED_CREDENTIALS_FILE", file.display().to_string()),
            ("AWS_PROFILE", self.profile.clone()),
            ("AWS_REGION", self.region.clone()),
        ];
        if let Some(e) = &self.endpoint {
            env.push(("AWS_ENDPOINT_URL", e.clone()));
        }
        Ok(env)
    }
}

impl std::fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Settings")
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials_from", &self.credentials_from)
            .finish_non_exhaustive()
    }
}

/// [`S3Settings::command_env`] for the repository at `location` as this process reaches it
/// (empty for other kinds of locations).
pub fn command_env_for(
    location: &crate::store::RepoLocation,
) -> Result<Vec<(&'static str, String)>, String> {
    let crate::store::RepoLocation::S3 { bucket, .. } = location else {
        return Ok(Vec::new());
    };
    resolve(bucket, &|k| std::env::var(k).ok())?.command_env()
}

/// The variables that carry secrets: a command run on our behalf by another process never
/// gets them from us.
pub const SECRET_VARS: [&str; 3] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
];

/// Reads the settings for `bucket` from `env` (the process environment in production; tests
/// pass their own) and the shared files it points to.
pub fn resolve(bucket: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Settings, String> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let profile = nonempty("AWS_PROFILE")
        .or_else(|| nonempty("AWS_DEFAULT_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let home = nonempty("HOME").map(PathBuf::from);
    let file = |var: &str, default: &str| {
        nonempty(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(default)))
    };
    let forced_file = CREDENTIALS_FILE.get().cloned();
    let credentials_file = forced_file
        .clone()
        .or_else(|| file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"));
    let config_file = file("AWS_CONFIG_FILE", ".aws/config");
    let creds_ini = match &credentials_file {
        Some(p) => match read_ini(p) {
            Ok(ini) => Some(ini),
            Err(e) if forced_file.is_some() => {
                return Err(format!(
                    "cannot read the S3 credentials file {} (--s3-credentials-file): {e}",
                    p.display()
                ))
            }
            Err(_) => None,
        },
        None => None,
    };
    let creds_section = creds_ini.and_then(|mut ini| ini.remove(&profile));
    let config_section = config_file
        .as_ref()
        .and_then(|p| read_ini(p).ok())
        .and_then(|mut ini| {
            let key = if profile == "default" {
                "default".to_string()
            } else {
                format!("profile {profile}")
            };
            ini.remove(&key)
        });

    // An explicitly named file outranks the environment.
    let (env_id, env_secret) = match forced_file {
        Some(_) => (None, None),
        None => (
            nonempty("AWS_ACCESS_KEY_ID"),
            nonempty("AWS_SECRET_ACCESS_KEY"),
        ),
    };
    let (access_key_id, secret_access_key, session_token, credentials_from, from_file) =
        match (env_id, env_secret) {
            (Some(id), Some(secret)) => (
                id,
                secret,
                nonempty("AWS_SESSION_TOKEN"),
                "the environment (AWS_ACCESS_KEY_ID)".to_string(),
                None,
            ),
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into(),
                )
            }
            (None, None) => {
                let section = creds_section.as_ref();
                let get = |k: &str| section.and_then(|s| s.get(k)).cloned();
                match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                    (Some(id), Some(secret)) => (
                        id,
                        secret,
                        get("aws_session_token"),
                        format!(
                            "profile {profile} of {}",
                            credentials_file
                                .as_ref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_default()
                        ),
                        credentials_file.clone(),
                    ),
                    _ => {
                        return Err(format!(
                            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                             (and AWS_SESSION_TOKEN for temporary ones), or put them in profile \
                             {profile} of the shared credentials file ({}; AWS_PROFILE and \
                             AWS_SHARED_CREDENTIALS_FILE choose another)",
                            credentials_file
                                .as_ref()
                                .map(|p| p.display().to_string())
                                .unwrap_or_else(|| "~/.aws/credentials".into())
                        ))
                    }
                }
            }
        };
    let from_config = |k: &str| config_section.as_ref().and_then(|s| s.get(k)).cloned();
    let region = nonempty("AWS_REGION")
        .or_else(|| nonempty("AWS_DEFAULT_REGION"))
        .or_else(|| from_config("region"))
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = nonempty("AWS_ENDPOINT_URL_S3")
        .or_else(|| nonempty("AWS_ENDPOINT_URL"))
        .or_else(|| from_config("endpoint_url"))
        .map(|e| e.trim_end_matches('/').to_string());
    let allow_http = match &endpoint {
        Some(e) => check_endpoint(e)?,
        None => false,
    };
    Ok(S3Settings {
        bucket: bucket.to_string(),
        region,
        endpoint,
        allow_http,
        access_key_id,
        secret_access_key,
        session_token,
        credentials_from,
        credentials_file: from_file,
        profile,
    })
}

/// Whether an endpoint is plain http (allowed only for loopback); an error for anything else.
fn check_endpoint(endpoint: &str) -> Result<bool, String> {
    let (scheme, rest) = endpoint
        .split_once("://")
        .ok_or_else(|| format!("endpoint {endpoint:?} is not a URL (https://host[:port])"))?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    match scheme {
        "https" => Ok(false),
        "http" => {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(true)
            } else {
                Err(format!(
                    "endpoint {endpoint} is plain http to {host}: credentials and data would cross \
                     the network unprotected; use https (plain http is accepted for a loopback \
                     endpoint only)"
                ))
            }
        }
        other => Err(format!(
            "endpoint {endpoint:?} has scheme {other:?}; use https"
        )),
    }
}

/// A shared AWS file: `[section]` headers and `key = value` lines.
fn read_ini(path: &std::path::Path) -> std::io::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let text = std::fs::read_to_string(path)?;
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn environment_credentials_and_a_loopback_endpoint() {
        let s = resolve(
            "b",
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AK"),
                ("AWS_SECRET_ACCESS_KEY", "SK"),
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000/"),
                ("AWS_REGION", "eu-west-3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(s.allow_http);
        assert_eq!(s.region, "eu-west-3");
        assert!(
            !format!("{s:?}").contains("SK"),
            "the secret is never shown"
        );
    }

    #[test]
    fn plain_http_to_another_host_is_refused() {
        let e = resolve(
            "b",
            &env(&[
                ("AWS_ACCESS_KEY_ID", "AK"),
                ("AWS_SECRET_ACCESS_KEY", "SK"),
                ("AWS_ENDPOINT_URL", "http://s3.example.com"),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }

    #[test]
    fn shared_files_give_credentials_region_and_endpoint_per_profile() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("credentials");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = D\naws_secret_access_key = DS\n\
             [backup]\naws_access_key_id = B\naws_secret_access_key = BS\naws_session_token = T\n",
        )
        .unwrap();
        let config = d.path().join("config");
        std::fs::write(
            &config,
            "[profile backup]\nregion = ca-central-1\nendpoint_url = https://s3.example.net\n",
        )
        .unwrap();
        let s = resolve(
            "b",
            &env(&[
                ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
                ("AWS_CONFIG_FILE", config.to_str().unwrap()),
                ("AWS_PROFILE", "backup"),
            ]),
        )
        .unwrap();
        assert_eq!(s.access_key_id, "B");
        assert_eq!(s.session_token.as_deref(), Some("T"));
        assert_eq!(s.region, "ca-central-1");
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.net"));
        assert!(!s.allow_http);
        let e = resolve("b", &env(&[("HOME", d.path().to_str().unwrap())])).unwrap_err();
        assert!(e.contains("no S3 credentials"), "{e}");
    }
}
