//! What a SIGHUP reload may change. The answer, authentication and reflection-defence settings
//! (`[server]`'s answer fields, `[auth]`, `[limit]`) are swapped into the running workers and a
//! new `log.level` applies at once; the sockets (`server.listen`, `[rfc5780]`) cannot change
//! without a restart, so a reload that changes them is refused; some `[io]` and `[admin]` fields
//! `limit.table_size` (the running table is kept) and `[xdp]` only take effect after a restart, which
//! is worth a warning.
//! Pure: it compares two [`Settings`]; reading the file and logging are the caller's.

use std::fmt;

use super::Settings;

/// A reload that may go ahead: the log level it sets, and the fields it changes that need a
/// restart to take effect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// The new `log.level` when it changed (the caller applies it); `None` when unchanged.
    pub log_level: Option<tracing::Level>,
    /// Changed fields that the running server keeps until it restarts (`io.cpus`, …).
    pub restart_needed: Vec<&'static str>,
}

impl ReloadPlan {
    /// The warning to log when some changes wait for a restart; it names them.
    pub fn warning(&self) -> Option<String> {
        (!self.restart_needed.is_empty())
            .then(|| format!("{}: changes take effect only after a restart", self.restart_needed.join(", ")))
    }
}

/// A reload refused because it changes the server's sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedReload {
    /// The changed fields (`server.listen`, `rfc5780`).
    pub changed: Vec<&'static str>,
}

impl fmt::Display for RefusedReload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("server.listen or [rfc5780] changed; restart to apply")
    }
}

impl std::error::Error for RefusedReload {}

impl Settings {
    /// Whether the running server (`self`) can reload `new`: refused when the sockets would
    /// change, otherwise the list of changes that wait for a restart.
    pub fn reload_plan(&self, new: &Settings) -> Result<ReloadPlan, RefusedReload> {
        let mut changed = Vec::new();
        if new.listen != self.listen {
            changed.push("server.listen");
        }
        if new.rfc5780 != self.rfc5780 {
            changed.push("rfc5780");
        }
        if !changed.is_empty() {
            return Err(RefusedReload { changed });
        }
        let restart_only = [
            ("io.cpus", new.cpus != self.cpus),
            ("io.backend", new.backend != self.backend),
            ("io.batch_size", new.batch_size != self.batch_size),
            ("admin.listen", new.admin_listen != self.admin_listen),
            ("admin.drain_seconds", new.drain != self.drain),
            ("limit.table_size", new.limit.rules.params().table_size != self.limit.rules.params().table_size),
            ("xdp", new.xdp.interfaces != self.xdp.interfaces || new.xdp.mode != self.xdp.mode),
            (
                "stream (listeners, threads, cpus, limits)",
                new.stream.listeners != self.stream.listeners
                    || new.stream.threads != self.stream.threads
                    || new.stream.cpus != self.stream.cpus
                    || new.stream.limits != self.stream.limits,
            ),
        ];
        Ok(ReloadPlan {
            log_level: (new.log_level != self.log_level).then_some(new.log_level),
            restart_needed: restart_only.into_iter().filter_map(|(field, changed)| changed.then_some(field)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate::tests::check;
    use super::*;

    const BASE: &str = "[server]\nlisten = [\"192.0.2.1:3478\"]\n";

    fn plan(old: &str, new: &str) -> Result<ReloadPlan, RefusedReload> {
        check(&format!("{BASE}{old}")).unwrap().reload_plan(&check(&format!("{BASE}{new}")).unwrap())
    }

    #[test]
    fn listen_changed_is_refused() {
        let old = check(BASE).unwrap();
        let new = check("[server]\nlisten = [\"192.0.2.1:3479\"]\n").unwrap();
        let refused = old.reload_plan(&new).unwrap_err();
        assert_eq!(refused.changed, ["server.listen"]);
        assert_eq!(refused.to_string(), "server.listen or [rfc5780] changed; restart to apply");
    }

    #[test]
    fn rfc5780_changed_is_refused() {
        let refused = plan("", "[rfc5780]\nalternate_ips = [\"192.0.2.2\"]\n").unwrap_err();
        assert_eq!(refused.changed, ["rfc5780"]);
        let refused = plan(
            "[rfc5780]\nalternate_ips = [\"192.0.2.2\"]\n",
            "[rfc5780]\nalternate_ips = [\"192.0.2.2\"]\nalternate_port = 4000\n",
        )
        .unwrap_err();
        assert_eq!(refused.changed, ["rfc5780"]);
    }

    #[test]
    fn io_and_admin_changes_are_accepted_with_a_warning() {
        let accepted =
            plan("", "[io]\nbatch_size = 64\ncpus = [1]\n[admin]\nlisten = \"\"\ndrain_seconds = 5\n").unwrap();
        assert_eq!(accepted.restart_needed, ["io.cpus", "io.batch_size", "admin.listen", "admin.drain_seconds"]);
        assert_eq!(
            accepted.warning().unwrap(),
            "io.cpus, io.batch_size, admin.listen, admin.drain_seconds: changes take effect only after a restart"
        );
        let accepted = plan("", "[io]\nbackend = \"mmsg\"\n").unwrap();
        assert_eq!(accepted.restart_needed, ["io.backend"]);
    }

    #[test]
    fn limit_changes_are_applied_but_table_size_waits_for_a_restart() {
        let accepted = plan("", "[limit]\ntable_size = 1000\nrate = 10\n").unwrap();
        assert_eq!(accepted.restart_needed, ["limit.table_size"]);
        assert_eq!(accepted.warning().unwrap(), "limit.table_size: changes take effect only after a restart");
        let every_other_field = "[limit]\nmode = \"dry-run\"\nrate = 10\nerror_rate = 5\nburst_seconds = 1\n\
                                 ipv4_multipliers = [2, 3, 4]\nipv6_multipliers = [2, 3, 4]\nleak = 0\nhard_cap = 1\n\
                                 max_amplification = 4\nrfc5780_max_amplification = 8\nexempt_nonce = false\n\
                                 exempt_loopback = false\nallow = [\"192.0.2.0/24\"]\nallow_rate = 7\n\
                                 deny = [\"::1\"]\ndeny_bogons = false\n";
        let accepted = plan("", every_other_field).unwrap();
        assert_eq!(accepted, ReloadPlan::default(), "swapped into the workers: nothing waits");
    }

    #[test]
    fn xdp_changes_wait_for_a_restart() {
        let accepted = plan("", "[xdp]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(accepted.restart_needed, ["xdp"]);
        let accepted =
            plan("[xdp]\ninterfaces = [\"eth0\"]\n", "[xdp]\ninterfaces = [\"eth0\"]\nmode = \"native\"\n").unwrap();
        assert_eq!(accepted.restart_needed, ["xdp"]);
    }

    #[test]
    fn log_level_is_applied() {
        let accepted = plan("", "[log]\nlevel = \"debug\"\n").unwrap();
        assert_eq!(accepted.log_level, Some(tracing::Level::DEBUG));
        assert_eq!(accepted.restart_needed, [] as [&str; 0], "no restart needed for it");
        assert_eq!(accepted.warning(), None);
        let same = plan("[log]\nlevel = \"warn\"\n", "[log]\nlevel = \"WARN\"\n").unwrap();
        assert_eq!(same.log_level, None, "unchanged: nothing to apply");
    }

    #[test]
    fn answer_and_auth_changes_are_accepted_without_a_warning() {
        let new = "[server]\nsoftware = \"x\"\nresponse_origin = true\n\
                   [auth]\npolicy = \"required\"\nlong_term_users = { alice = \"wonderland\" }\n";
        // BASE already has a [server] table: give the new answer fields in the old one's place.
        let old = check(BASE).unwrap();
        let new = check(&format!("[server]\nlisten = [\"192.0.2.1:3478\"]\n{}", &new["[server]\n".len()..])).unwrap();
        let accepted = old.reload_plan(&new).unwrap();
        assert_eq!(accepted, ReloadPlan::default());
        assert_eq!(accepted.warning(), None);
    }
}
