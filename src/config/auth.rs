//! The `[auth]` section: per-listener policy and mechanism, the realm, nonce and password
//! algorithm settings, and the secrets, from this file and from `auth.credentials_file` (which
//! is read here, and whose mode is checked). Errors name users and fields, never a password.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use super::error::{invalid, redact_quoted};
use super::schema::Written as _;
use super::{Config, ConfigError};
use crate::auth::{AuthSettings, Authenticator, Mechanism, Policy};
use crate::handler::ListenerAuth;
use crate::stun::attr::{MAX_TEXT, MAX_USERNAME};

/// The credentials file's contents (`auth.credentials_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CredentialsFile {
    nonce_secret: String,
    short_term_users: BTreeMap<String, String>,
    long_term_users: BTreeMap<String, String>,
    rest_secrets: Vec<String>,
}

/// What [`Config::validate_auth`] gives: each listener's authentication, and the
/// authenticator when one is built.
type AuthPlan = (Vec<Option<ListenerAuth>>, Option<Arc<Authenticator>>);

impl Config {
    /// Validates `[auth]` and the credentials file; returns each listener's authentication.
    /// `turn_lb_long_term`: `[turn_lb]` challenges Allocates with long-term credentials, so the
    /// authenticator is built (and returned) even when no listener checks Binding requests.
    pub(super) fn validate_auth(
        &self,
        listen: &[SocketAddr],
        turn_lb_long_term: bool,
        warnings: &mut Vec<String>,
    ) -> Result<AuthPlan, ConfigError> {
        let a = &self.auth;
        let mut per_listener: Vec<(Policy, Mechanism)> = vec![(a.policy, a.mechanism); listen.len()];
        let mut named = vec![false; listen.len()];
        for (i, l) in a.listeners.iter().enumerate() {
            let field = format!("auth.listeners[{i}]");
            let addr: Option<SocketAddr> = l.listen.parse().ok();
            let Some(at) = listen.iter().position(|x| Some(*x) == addr) else {
                return Err(invalid(format!("{field}.listen"), format!("{:?}", l.listen), "not one of server.listen"));
            };
            if named[at] {
                return Err(invalid(format!("{field}.listen"), format!("{:?}", l.listen), "listed twice"));
            }
            named[at] = true;
            per_listener[at] = (l.policy, l.mechanism.unwrap_or(a.mechanism));
        }

        let realm = &a.realm;
        if realm.is_empty()
            || realm.chars().count() >= 128
            || realm.len() > MAX_TEXT
            || realm.chars().any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return Err(invalid(
                "auth.realm",
                format!("{realm:?}"),
                "must be 1 to 127 characters without '\"', '\\' or control characters",
            ));
        }
        if !(10..=86_400).contains(&a.nonce_lifetime) {
            return Err(invalid("auth.nonce_lifetime", a.nonce_lifetime, "must be between 10 and 86400 seconds"));
        }
        let password_algorithms = &a.password_algorithms;
        for (i, &algorithm) in password_algorithms.iter().enumerate() {
            if password_algorithms[..i].contains(&algorithm) {
                let field = format!("auth.password_algorithms[{i}]");
                return Err(invalid(field, format!("\"{}\"", algorithm.written()), "listed twice"));
            }
        }

        // Secrets: from this file and from the credentials file, never both for one name.
        let mut file = CredentialsFile::default();
        if !a.credentials_file.is_empty() {
            let named = Path::new(&a.credentials_file);
            let path = match self.origin.as_deref().and_then(Path::parent) {
                Some(dir) if named.is_relative() => dir.join(named),
                _ => named.to_path_buf(),
            };
            let path = path.as_path();
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("auth.credentials_file", format!("{path:?}"), format!("cannot read: {e}")))?;
            file = toml::from_str(&text).map_err(|e| {
                let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                // The message names the key; values (secrets) are left out.
                ConfigError {
                    location: format!("{}:{line}", path.display()),
                    field: "auth.credentials_file".into(),
                    value: String::new(),
                    reason: redact_quoted(&e.message().replace('\n', " ")),
                }
            })?;
            if world_readable(path) {
                warnings.push(format!("{} holds secrets and others can read it; chmod 600 it", path.display()));
            }
        }
        let in_config = !a.nonce_secret.is_empty()
            || !a.short_term_users.is_empty()
            || !a.long_term_users.is_empty()
            || !a.rest_secrets.is_empty();
        if let (true, Some(origin)) = (in_config, &self.origin) {
            if world_readable(origin) {
                warnings.push(format!("{} holds secrets and others can read it; chmod 600 it", origin.display()));
            }
        }
        let short_term = merge_users("short_term_users", &a.short_term_users, &file.short_term_users)?;
        let long_term = merge_users("long_term_users", &a.long_term_users, &file.long_term_users)?;
        let mut rest_secrets = a.rest_secrets.clone();
        rest_secrets.extend(file.rest_secrets.iter().cloned());
        if rest_secrets.iter().any(String::is_empty) {
            return Err(invalid("auth.rest_secrets", "", "an empty secret is not a secret"));
        }
        let nonce_secret = match (a.nonce_secret.is_empty(), file.nonce_secret.is_empty()) {
            (false, false) => {
                return Err(invalid("auth.nonce_secret", "", "set both here and in the credentials file"));
            }
            (false, true) => a.nonce_secret.as_bytes().to_vec(),
            (true, false) => file.nonce_secret.as_bytes().to_vec(),
            (true, true) => Vec::new(),
        };
        if !nonce_secret.is_empty() && nonce_secret.len() < 16 {
            return Err(invalid("auth.nonce_secret", "", "must be at least 16 bytes"));
        }

        let any_long_term =
            turn_lb_long_term || per_listener.iter().any(|&(p, m)| p != Policy::None && m == Mechanism::LongTerm);
        if turn_lb_long_term && long_term.is_empty() && rest_secrets.is_empty() {
            return Err(invalid(
                "turn_lb.auth",
                "\"long-term\"",
                "Allocates are to be authenticated but there are no auth.long_term_users and no auth.rest_secrets",
            ));
        }
        for (i, &(policy, mechanism)) in per_listener.iter().enumerate() {
            if policy == Policy::None {
                continue;
            }
            let (users, name) = match mechanism {
                Mechanism::ShortTerm => (&short_term, "short_term_users"),
                Mechanism::LongTerm => (&long_term, "long_term_users"),
            };
            if users.is_empty() && rest_secrets.is_empty() {
                return Err(invalid(
                    "auth.policy",
                    format!("listener {}", listen[i]),
                    format!("authentication is on but there are no auth.{name} and no auth.rest_secrets"),
                ));
            }
        }
        if !turn_lb_long_term && per_listener.iter().all(|&(p, _)| p == Policy::None) {
            return Ok((vec![None; listen.len()], None));
        }
        let nonce_secret = if nonce_secret.is_empty() {
            if any_long_term {
                warnings.push(
                    "auth.nonce_secret is empty: nonces are valid only in this process; \
                     set one shared secret on every node of a fleet"
                        .into(),
                );
            }
            process_secret().to_vec()
        } else {
            nonce_secret
        };
        let settings = AuthSettings {
            realm: realm.clone(),
            nonce_secret,
            nonce_lifetime: a.nonce_lifetime as u32,
            password_algorithms: password_algorithms.clone(),
            userhash: a.userhash,
            short_term,
            long_term,
            rest_secrets,
        };
        let authenticator = Arc::new(Authenticator::new(&settings));
        let per_listener = per_listener
            .into_iter()
            .map(|(policy, mechanism)| {
                (policy != Policy::None).then(|| ListenerAuth {
                    policy,
                    mechanism,
                    authenticator: authenticator.clone(),
                })
            })
            .collect();
        Ok((per_listener, turn_lb_long_term.then_some(authenticator)))
    }
}

/// Users from the config and the credentials file, checked: names 1..=513 bytes without control
/// characters, passwords not empty, no name in both. Errors name the user, never the password.
fn merge_users(
    key: &str,
    here: &BTreeMap<String, String>,
    file: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::with_capacity(here.len() + file.len());
    for (name, password) in here.iter().chain(file) {
        let field = format!("auth.{key}");
        if name.is_empty() || name.len() > MAX_USERNAME || name.chars().any(char::is_control) {
            return Err(invalid(
                field,
                format!("{name:?}"),
                "user names are 1 to 513 bytes without control characters",
            ));
        }
        if password.is_empty() {
            return Err(invalid(field, format!("{name:?}"), "empty password"));
        }
        if out.iter().any(|(n, _): &(String, String)| n == name) {
            return Err(invalid(field, format!("{name:?}"), "defined both in the config and in the credentials file"));
        }
        out.push((name.clone(), password.clone()));
    }
    Ok(out)
}

/// Whether users other than the owner may read `path` (mode bits o+r).
pub(super) fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// A random nonce secret for this process, read once from the kernel's generator (reloads keep
/// it, so nonces survive a SIGHUP).
///
/// It stays here rather than in `auth::nonce`: reading `/dev/urandom` is I/O, and `auth` does
/// none (its module doc and STYLE §1); `auth` takes the secret as a parameter.
fn process_secret() -> &'static [u8; 32] {
    static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
    SECRET.get_or_init(|| {
        let mut secret = [0u8; 32];
        use std::io::Read;
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret));
        if read.is_err() {
            // No /dev/urandom: fall back to the std hasher's per-process random keys.
            use std::hash::{BuildHasher, Hasher};
            for chunk in secret.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_usize(chunk.as_ptr() as usize);
                chunk.copy_from_slice(&h.finish().to_ne_bytes());
            }
        }
        secret
    })
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::check;

    #[test]
    fn auth_errors_name_the_field_and_never_a_secret() {
        let e = check("[auth]\npolicy = \"sometimes\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:2: auth.policy = \"sometimes\": must be \"none\", \"optional\" or \"required\""
        );
        let e = check("[auth]\nrest_secrets = \"hunter2-rest\"\n").unwrap_err();
        assert_eq!(e.field, "auth.rest_secrets");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = check("[auth.long_term_users]\nalice = 7\nbob = \"hunter2\"\n").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = check("[auth]\npolicy = \"required\"\nlong_term_users = { alice = \"\" }\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.long_term_users = \"alice\": empty password");
        let e = check("[auth]\npolicy = \"required\"\n").unwrap_err();
        assert!(e.reason.contains("no auth.long_term_users and no auth.rest_secrets"), "{e}");
        let e = check("[auth]\nnonce_secret = \"short\"\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.nonce_secret: must be at least 16 bytes");
        let e = check("[auth]\npassword_algorithms = [\"sha256\", \"sha1\"]\n").unwrap_err();
        assert_eq!(e.field, "auth.password_algorithms[1]");
        let e = check("[auth]\npassword_algorithms = [\"md5\", \"md5\"]\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.password_algorithms[1] = \"md5\": listed twice");
        let e = check("[auth]\nlisteners = [{ listen = \"10.0.0.1:1\", policy = \"required\" }]\n").unwrap_err();
        assert_eq!(e.to_string(), "auth.listeners[0].listen = \"10.0.0.1:1\": not one of server.listen");
        let e = check("[auth]\nlisteners = [{ listen = \"0.0.0.0:3478\", policy = \"always\" }]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:2: auth.listeners[0].policy = \"always\": must be \"none\", \"optional\" or \"required\""
        );
        let e = check("[auth]\nmechanism = \"medium-term\"\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "test.toml:2: auth.mechanism = \"medium-term\": must be \"long-term\" or \"short-term\""
        );
        let e = check("[auth]\nrealm = \"a\\\"b\"\n").unwrap_err();
        assert_eq!(e.field, "auth.realm");
        let e = check("[auth]\nnonce_lifetime = 5\n").unwrap_err();
        assert_eq!(e.field, "auth.nonce_lifetime");
        // Debug output of validated settings never shows a password.
        let s = check("[auth]\npolicy = \"required\"\nlong_term_users = { alice = \"hunter2\" }\n").unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(
            super::redact_quoted("invalid type: string \"x\", expected \"y\""),
            "invalid type: string \"…\", expected \"…\""
        );
    }
}
